// Package examples holds programs that use berth as a caller would:
//
//   - berthctl: a command-line client over the library, every operation.
//   - quickstart: one container on the embedded engine, step by step.
package examples
