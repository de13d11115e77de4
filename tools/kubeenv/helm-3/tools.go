//go:build tools

// Package tools pins the helm CLI main package.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
