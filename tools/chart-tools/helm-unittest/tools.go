//go:build tools

// Package tools pins the helm-unittest main package (the `helm unittest` plugin's binary).
package tools

import _ "github.com/helm-unittest/helm-unittest/cmd/helm-unittest"
