package main

import (
	"os/exec"
	"strconv"
)

func runChild(exe string, n int) (string, error) {
	out, err := exec.Command(exe, "-one", strconv.Itoa(n)).Output() // #nosec G204 -- our own binary
	return string(out), err
}
