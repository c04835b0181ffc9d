// The etcd server, built from etcd's published server module: its own repository's main
// package (go.etcd.io/etcd/v3) is not served by the module proxy, and does only this.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
