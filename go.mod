module github.com/ferrybackup/ferry

go 1.26
