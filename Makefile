# ringcast — the two commands that matter: `make run` and `make test`.
CARGO ?= cargo
BIN := target/release/ringcast

.PHONY: build run test test-deps unit lint pytest nodetest autobahn bench fmt clean tune tune-check c1m fuzz fuzz-smoke c1m-netns cluster-demo cluster-bench spring-demo install uninstall deb autobahn-deflate peers compare compare-smoke compare-tls compare-stomp storm upgrade-bench

build:
	$(CARGO) build --release --workspace

## Build and run the server on its embedded default (ws://127.0.0.1:8080/ws, auth off).
run: build
	./$(BIN) serve

## Install what the tests need, then run every test.
test: test-deps build lint unit pytest nodetest autobahn compare-smoke fuzz-smoke

test-deps:
	./scripts/install-test-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace --release

pytest: build
	python3 -m pytest -q tests/py

nodetest: build
	cd tests/node && node --test

autobahn: build
	./tests/autobahn/run.sh

## Every permessage-deflate case (12.*, 13.*: 216 cases, ~8 min) besides the usual run.
autobahn-deflate: build
	DEFLATE_CASES='12.*,13.*' ./tests/autobahn/run.sh

## Load benchmark (see bench/README.md and BENCHMARKS.md).
bench: build
	./scripts/bench.sh

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

## Apply the kernel and limit settings for ~1M connections (root); tune-check only reports.
tune:
	./tuning/tune.sh

tune-check:
	./tuning/tune.sh --check || true

## One million connections on this host: floor, ringcast raw, ringcast STOMP (see BENCHMARKS.md).
c1m: build
	./scripts/c1m.sh

## The same inside a network namespace with a 2^21-bucket TCP established hash (root).
c1m-netns: build
	./scripts/c1m-netns.sh

## Reconnect storms (issue #32): 1M raw connections and 100k RS256 STOMP sessions, the server
## SIGKILLed and restarted under them (results into bench/results/storm-*).
storm: build
	./bench/storm.sh

## `ringcast upgrade` under load: 200,000 raw connections, then 100,000 STOMP sessions (BENCHMARKS.md).
upgrade-bench: build
	python3 bench/upgrade.py --connections 200000 --shards 12 --topics 2000 --rate 500 --duration 30 --upgrade-at 8
	python3 bench/upgrade.py --stomp --connections 100000 --shards 6 --topics 1000 --rate 500 --duration 30 --upgrade-at 8

## Peers for `compare` (tokio-tungstenite, Node ws, Netty); installs a JDK and libnetty-java if missing.
peers: build
	./scripts/peers.sh

## ringcast vs its peers and the floor, same machine, same run (results into bench/results/).
COMPARE_OUT ?= bench/results/compare-$(shell date -u +%Y%m%dT%H%M%SZ)
compare: peers
	./target/release/ringcast-bench compare --out $(COMPARE_OUT) $(COMPARE_ARGS)

## wss:// side by side (issue #16): ringcast terminating TLS itself, nginx terminating TLS in
## front of a plain ringcast, Node ws on https; plus ringcast plain as the reference.
compare-tls: peers
	./target/release/ringcast-bench compare --servers ringcast,ringcast-tls,nginx-tls,node-ws-tls \
	  --out $(COMPARE_OUT)-tls $(COMPARE_ARGS)

## STOMP side by side (issue #18): ringcast's STOMP sessions (a JWT each) against RabbitMQ
## Web-STOMP and ActiveMQ (bench/peers/rabbitmq, bench/peers/activemq), plus the floor.
compare-stomp: peers
	./target/release/ringcast-bench compare --stomp --out $(COMPARE_OUT)-stomp $(COMPARE_ARGS)

## 500 connections through every peer, and 300 STOMP sessions through ringcast and both
## brokers: each reaches all its connections, the tables are produced.
compare-smoke: peers
	./target/release/ringcast-bench compare -n 500 --sustained-connections 500 --topics 10 \
	  --rate 200 --duration 3 --out target/compare-smoke > target/compare-smoke.md
	cat target/compare-smoke.md
	./target/release/ringcast-bench compare --stomp -n 300 --sustained-connections 300 --topics 10 \
	  --rate 100 --duration 3 --repeat 1 --out target/compare-stomp-smoke > target/compare-stomp-smoke.md
	cat target/compare-stomp-smoke.md

## Three nodes (8081-8083) on a private redis-server, with a small bench across them.
cluster-demo: build
	./scripts/cluster.sh demo

## Install (as root): binary, /etc/ringcast/ringcast.toml, systemd unit, sysctl and limits,
## the ringcast user. DESTDIR=… stages it elsewhere; PURGE=1 make uninstall also drops the config.
install: build
	./scripts/install.sh install

uninstall:
	./scripts/install.sh uninstall

## A Debian package (cargo-deb) with the same unit, sysctl drop-in and limits.
deb: build
	mkdir -p target/deb
	sed 's|/usr/local/bin/ringcast|/usr/bin/ringcast|' tuning/ringcast.service > target/deb/ringcast.service
	cargo deb --no-build --no-strip -p ringcast

## The seed's browser page (sockjs-client + stomp.js 2.3.3) against ringcast: open the URL it prints.
spring-demo: build
	./scripts/spring-demo.sh

## 3 nodes × 30,000 connections at 1,000 publishes/s, then the same load on one node.
cluster-bench: build
	./scripts/cluster.sh bench

## Fuzz every parser that reads network or admin bytes (FUZZ_SECONDS per target).
FUZZ_SECONDS ?= 300
fuzz:
	./scripts/fuzz.sh $(FUZZ_SECONDS)

fuzz-smoke:
	./scripts/fuzz.sh 20
