module github.com/batchio/threadpool

go 1.26
