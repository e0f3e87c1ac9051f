// Command etcd is the etcd server, built from the published etcd server module
// because Debian's etcd is older than what Kubernetes 1.34 is tested with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
