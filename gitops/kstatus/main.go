// Command kstatus reads Kubernetes objects as JSON (one per line) on stdin and prints, for
// each, the status that sigs.k8s.io/cli-utils/pkg/kstatus computes for it, as one JSON line
// {"status": "...", "message": "..."}. The tests use it to check videoqueue's conditions
// against the real kstatus rules that Flux and kpt apply.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

func main() {
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for scanner.Scan() {
		// Decoded as the API machinery does (integers stay int64), which kstatus expects.
		obj := &unstructured.Unstructured{}
		var res result
		if err := obj.UnmarshalJSON(scanner.Bytes()); err != nil {
			res.Error = fmt.Sprintf("not a Kubernetes object: %v", err)
		} else if computed, err := status.Compute(obj); err != nil {
			res.Error = err.Error()
		} else {
			res.Status, res.Message = computed.Status.String(), computed.Message
		}
		if err := out.Encode(res); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if err := scanner.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
