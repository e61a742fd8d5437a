"""``cxstream`` command line: run the engine, serve its HTTP API, replay recordings, export schemas, evaluate models."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from cxstream.streams.endpoints import NoRunningEngine, engine_endpoints
from cxstream.streams.settings import Settings, SettingsError

#: ``cxstream eval WHAT ...`` and ``cxstream bench WHAT ...`` hand their arguments to these modules' ``main(argv)``.
EVALS = {
    "intent": "cxstream.intel.evaluate",
    "churn": "cxstream.intel.evaluate",
    "split": "cxstream.intel.evaluate",
    "routing": "cxstream.replay.eval_routing",
    "assist": "cxstream.intel.eval_assist",
    "assist-split": "cxstream.intel.eval_assist",
    "health": "cxstream.intel.eval_health",
    "language": "cxstream.intel.eval_language",
    "nba": "cxstream.intel.nba_eval",
}
BENCHES: dict[str, str] = {"pipeline": "cxstream.bench.loadgen", "context": "cxstream.bench.context_bench", "outreach": "cxstream.outreach.bench"}
#: What each of them does, for ``cxstream eval --help`` / ``cxstream bench --help`` (without importing them).
ABOUT = {
    "intent": "the intent model: one online pass over --train, then score --test",
    "churn": "the churn model: progressive test-then-train over the Telco churn table",
    "split": "write a stratified train/test split of a text,category CSV",
    "routing": "replay the bank call-centre log through the router, per policy",
    "assist": "suggested knowledge: online document ranking vs a batch TF-IDF baseline (Twitter care data)",
    "assist-split": "split a conversations file in time order (tuning part, held-out part)",
    "health": "the customer health score against churn on the Telco table (tuning/test halves)",
    "language": "message language detection: accuracy per language and µs/message on Django's catalogues",
    "nba": "the next-best-action bandit off-policy (IPS, SNIPS, DR) on the ServiceNow incident log",
    "pipeline": "the engine on the embedded broker, open loop, with two references (docs/PERFORMANCE.md)",
    "context": "context retention across channel switches, wrong merges, lookup latency",
    "outreach": "the churn trigger and the guardrails on the Telco table",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cxstream", description="Real-time customer-engagement engine.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the engine (embedded broker and Redis unless CX_BROKER_URL/CX_REDIS_URL)")
    run.add_argument("--demo", action="store_true", help="also replay a small bundled sample with simulated advisor desktops")

    sv = sub.add_parser(
        "serve", help="run the HTTP API alone, against CX_REDIS_URL (and CX_BROKER_URL for erasure requests; unset: those of "
        "the engine running on CX_DATA_DIR); 'run' starts it itself"
    )
    sv.add_argument("--engine-metrics", default=None, metavar="URL", help="the engine's Prometheus endpoint, included in /metrics")
    sv.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)  # used by 'cxstream run' (cxstream.serve.workers)
    sv.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)

    ln = sub.add_parser(
        "learn", help="run the learner alone (the models' single writer), against CX_BROKER_URL and CX_REDIS_URL (unset: "
        "those of the engine running on CX_DATA_DIR); 'run' starts it itself unless CX_LEARNER_PROCESS=0"
    )
    ln.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)  # used by 'cxstream run' (cxstream.agents.learnproc)
    ln.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)

    rp = sub.add_parser("replay", help="publish a JSONL recording to the engine's input topics")
    rp.add_argument("file", help="JSONL file: one record per line (see docs/EVENTS.md)")
    rp.add_argument("--speed", type=float, default=1.0, help="1 = real time, 10 = ten times faster, 0 = as fast as possible")
    rp.add_argument("--broker", default=None, help="bootstrap servers (default: CX_BROKER_URL, else the broker of the engine running on CX_DATA_DIR, from its endpoints.json)")
    rp.add_argument("--keep-times", action="store_true", help="keep the recorded event times instead of re-stamping them to the replay's clock")
    rp.add_argument("--wait", type=float, default=5.0, help="most seconds to wait after the last record for the replayed contacts that need an advisor to be assigned "
                    "(it stops as soon as each is)")
    rp.add_argument("--no-progress", action="store_true", help="no progress bar")
    rp.add_argument("--json", default=None, help="also write the latency summary to this file")

    sc = sub.add_parser("schemas", help="the wire contract")
    sc_sub = sc.add_subparsers(dest="schemas_command", required=True)
    ex = sc_sub.add_parser("export", help="write one JSON Schema file per record into DIR")
    ex.add_argument("dir")
    md = sc_sub.add_parser("docs", help="write the markdown reference of the contract to FILE")
    md.add_argument("file")

    sub.add_parser("settings", help="list every CX_* setting with its default and meaning")

    for name, modules, what in (("eval", EVALS, "evaluate a model or policy on data"), ("bench", BENCHES, "run a benchmark")):
        listing = "\n".join(f"  {cmd:<10} {ABOUT[cmd]}" for cmd in sorted(modules))
        e = sub.add_parser(
            name, help=what, description=f"{what[0].upper()}{what[1:]}.", add_help=False,
            usage=f"%(prog)s {{{','.join(sorted(modules))}}} [its options; '%(prog)s WHAT --help' lists them]",
            epilog=f"commands:\n{listing}", formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # Only before WHAT: 'cxstream eval intent --help' goes on to the module's own parser (in *rest*).
        e.add_argument("-h", "--help", action="help", help="list the commands and exit")
        e.add_argument("what", choices=sorted(modules), nargs="?", metavar="WHAT", help="one of the commands below")
        e.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        e.set_defaults(help_text=e.format_help)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"cxstream: {exc}", file=sys.stderr)
        return 2

    if args.command == "run":
        from cxstream.engine import main_run

        return main_run(settings, demo=args.demo)
    if args.command in ("serve", "learn"):
        needed = [settings.redis_url] + ([settings.broker_url] if args.command == "learn" else [])  # serve: the broker is optional
        if not all(needed) and args.ready_fd is None:
            try:  # alone, beside 'make run': that engine's Redis and broker
                found = engine_endpoints(settings)
            except NoRunningEngine as exc:
                print(f"cxstream {args.command}: no Redis or broker: CX_REDIS_URL/CX_BROKER_URL not set and {exc}", file=sys.stderr)
                return 2
            settings = settings.replace(redis_url=settings.redis_url or found["redis_url"],
                                        broker_url=settings.broker_url or found["broker_url"])
        if args.command == "learn":
            from cxstream.agents.learnproc import main_learn

            return main_learn(settings, args)
        from cxstream.serve.main import main_serve

        return main_serve(settings, args)
    if args.command == "replay":
        from cxstream.replay.publish import main_replay

        broker = args.broker or settings.broker_url
        if not broker:  # the broker of the engine running on this data folder ('make run')
            try:
                broker = engine_endpoints(settings)["broker_url"]
            except NoRunningEngine as exc:
                print(f"cxstream replay: no broker to publish to: CX_BROKER_URL is not set and {exc}; "
                      "or pass --broker HOST:PORT", file=sys.stderr)
                return 2
        return main_replay(
            args.file, broker, speed=args.speed, keep_times=args.keep_times, wait_s=args.wait,
            progress=not args.no_progress, json_out=args.json, topic_prefix=settings.topic_prefix, settings=settings,
        )
    if args.command == "schemas":
        from cxstream.schemas import export_json_schemas
        from cxstream.schemas.docs import reference_markdown

        if args.schemas_command == "docs":
            Path(args.file).write_text(reference_markdown())
            print(args.file)
            return 0
        for path in export_json_schemas(args.dir):
            print(path)
        return 0
    if args.command == "settings":
        for name, default, meaning in Settings.documented():
            print(f"{name:<28} {default:<18} {meaning}")
        return 0
    modules = EVALS if args.command == "eval" else BENCHES
    if args.what is None:  # 'cxstream eval' alone: what it can do, as a usage error
        print(args.help_text(), file=sys.stderr, end="")
        print(f"cxstream {args.command}: say which one", file=sys.stderr)
        return 2
    module = importlib.import_module(modules[args.what])
    rest = list(args.rest)
    return int(module.main([args.what, *rest]) if args.what in ("intent", "churn", "split", "assist", "assist-split") else module.main(rest))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
