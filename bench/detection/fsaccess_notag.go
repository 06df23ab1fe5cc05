//go:build !no_fs_access

package main

// builtNoFSAccess reports whether this binary was built with -tags
// no_fs_access, as the product is (scripts/build.sh). Without it Coraza
// writes multipart file parts to temporary files.
const builtNoFSAccess = false
