//! Nothing to build: the checks are the integration tests in `tests/`, which
//! read the deployment files of the repository.
