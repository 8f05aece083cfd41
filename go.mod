module github.com/batchio/threadpool

go 1.26

require golang.org/x/sys v0.50.0
