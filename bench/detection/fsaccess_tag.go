//go:build no_fs_access

package main

// builtNoFSAccess reports whether this binary was built with -tags
// no_fs_access, as the product is (scripts/build.sh): Coraza then keeps
// multipart file parts in memory.
const builtNoFSAccess = true
