//! Test support: start and stop real etcd and skiff-apiserver processes.
