# The two set-up commands: `make run` and `make test` (see README.md).
SHELL := /bin/bash
JOBS ?= $(shell nproc)
BUILD_TEST ?= build/test
BUILD_RELEASE ?= build/release
DATA_DIR ?= $(CURDIR)/data
PORT ?= 8080
# ccache hits across clones of the repository (CI builds a fresh clone every time).
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := 1

.PHONY: all bootstrap release test-build run test format tidy clean

all: release

bootstrap:
	@scripts/bootstrap

$(BUILD_RELEASE)/build.ninja: | bootstrap
	cmake -S . -B $(BUILD_RELEASE) -G Ninja -DCMAKE_BUILD_TYPE=Release -DSEGMA_BUILD_TESTS=OFF

$(BUILD_TEST)/build.ninja: | bootstrap
	cmake -S . -B $(BUILD_TEST) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSEGMA_SANITIZE=ON \
	  -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" -DSEGMA_BUILD_BENCH=OFF

# Release build: serves `make run` and the benchmarks.
release: bootstrap $(BUILD_RELEASE)/build.ninja
	cmake --build $(BUILD_RELEASE) -j $(JOBS)

# Starts the server with an embedded worker on the demo pool (simulated GPUs when none are found).
run: release
	$(BUILD_RELEASE)/src/cli/segma start --data-dir $(DATA_DIR) --port $(PORT)

# One ASan+UBSan build, then every test on it.
test-build: bootstrap $(BUILD_TEST)/build.ninja
	cmake --build $(BUILD_TEST) -j $(JOBS)

test: test-build
	scripts/check-deps
	scripts/test-deps
	cd $(BUILD_TEST) && ctest --output-on-failure -j $(JOBS) --timeout 600

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

tidy: $(BUILD_TEST)/build.ninja
	run-clang-tidy -p $(BUILD_TEST) -quiet src/

clean:
	rm -rf build
