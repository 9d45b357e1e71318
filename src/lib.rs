//! Examples, integration tests and benchmarks of the workspace.
