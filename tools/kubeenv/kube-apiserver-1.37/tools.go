//go:build tools

// Package tools pins the kube-apiserver main package so `go build` can resolve it.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
