//go:build tools

// Package tools pins the helm-docs main package.
package tools

import _ "github.com/norwoodj/helm-docs/cmd/helm-docs"
