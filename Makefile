# Every routine in one place: make fmt | lint | test | e2e | bench | quickstart | doc
.PHONY: fmt lint test unit e2e bench quickstart protobuf doc

fmt:
	cargo fmt --all

# Formatting, clippy and cargo deny (deny.toml).
lint:
	scripts/lint

# Everything CI runs: unit and end-to-end tests (installs what they need).
test:
	scripts/test

unit:
	cargo test --workspace --lib

e2e:
	scripts/install-deps
	cargo build --workspace --bins --examples
	cargo test -p skiff-e2e --tests

bench:
	scripts/bench

# The SDK reference (skiff-client, skiff-proto).
doc:
	cargo doc -p skiff-client -p skiff-proto --no-deps --open

quickstart:
	deploy/quickstart.sh

# Regenerates the protobuf conversions after a k8s-openapi or k8s-pb upgrade.
protobuf:
	python3 scripts/gen-protobuf-conversions.py > apiserver/src/protobuf/generated.rs
	cargo fmt --all
