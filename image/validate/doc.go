// Package validate checks the invariants berth's image tests rely on, in
// one place every test reuses: a store's consistency (Store), a byte-for-
// byte listing of a directory to compare before and after an operation
// (Snapshot), and the safety of an unpacked tree (Tree).
package validate
