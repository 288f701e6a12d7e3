"""``python -m core``: info, compress, verify, ingest, check, users, delete, lab, bench.

Every failure the user can cause ends as one line on stderr and exit code 2;
``verify`` exits 1 when a file claims to be lossless and is not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .codecs import CODEC_NAMES, MAX_RATIO, MIN_RATIO, check_ratio
from .compress import MODES, compress, parse_mode
from .derive import format_ratio, lossy_history
from .errors import InvalidOptionError, RadPressError
from .files import write_dataset
from .pixels import pixel_spec, read_dataset
from .present import dimensions
from .verify import verify

__all__ = ["main"]

EXIT_OK, EXIT_LOSSLESS_VIOLATION, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as for any other bad input
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message}\n")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def cmd_info(args) -> int:
    rows, status = [], EXIT_OK
    for path in args.files:
        try:
            ds = read_dataset(path)
            spec = pixel_spec(ds)
        except RadPressError as exc:
            _fail(f"{path}: {exc}" if str(path) not in str(exc) else str(exc))
            status = EXIT_BAD_INPUT
            continue
        uid = ds.file_meta.TransferSyntaxUID
        rows.append(
            {
                "file": str(path),
                "modality": str(ds.get("Modality", "")),
                "rows": spec.rows,
                "columns": spec.columns,
                "frames": spec.frames,
                "samples_per_pixel": spec.samples,
                "bits_allocated": spec.bits_allocated,
                "bits_stored": spec.bits_stored,
                "signed": spec.signed,
                "photometric": str(ds.get("PhotometricInterpretation", "")),
                "transfer_syntax": str(uid),
                "transfer_syntax_name": uid.name,
                "uncompressed_bytes": spec.frame_bytes * spec.frames,
                **lossy_history(ds).to_dict(),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(
                f"{r['file']}: {r['modality'] or '?'} {dimensions(r['columns'], r['rows'])}, {r['frames']} frame(s), "
                f"{r['bits_stored']}/{r['bits_allocated']} bits {'signed' if r['signed'] else 'unsigned'}, "
                f"{r['photometric']}, {r['transfer_syntax_name']} ({r['transfer_syntax']}), "
                f"{r['uncompressed_bytes']} bytes uncompressed"
                + (f"; LOSSY original ({r['lossy_label']})" if r["lossy"] else "")
            )
    return status


def _output_path(out_dir: Path, source: Path, codec: str, mode: str, ratio: float | None) -> Path:
    suffix = f"{codec}-{mode}" + (format_ratio(ratio) if ratio else "")
    return out_dir / f"{source.stem}.{suffix}.dcm"


def cmd_compress(args) -> int:
    lossy = parse_mode(args.mode)
    ratio = check_ratio(args.ratio, lossy)
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidOptionError(f"--out {out_dir} is a file, not a folder.")
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = {Path(p).resolve() for p in args.files}
    rows, status = [], EXIT_OK
    for name in args.files:
        source = Path(name)
        try:
            start = time.perf_counter()
            ds = read_dataset(source)
            result = compress(ds, args.codec, args.mode, ratio, over_bound="refuse")
            target = _output_path(out_dir, source, result.codec.name, args.mode, ratio)
            if target.resolve() in inputs:
                raise InvalidOptionError(f"Refusing to overwrite the input file {target}.", hint="Choose another --out folder.")
            size = write_dataset(result.dataset, target)
        except RadPressError as exc:
            _fail(f"{source}: {exc}" if str(source) not in str(exc) else str(exc))
            status = EXIT_BAD_INPUT
            continue
        outcome = result.outcome
        if outcome and outcome.warning:  # never silently on the other side of the target
            print(f"warning: {source}: {outcome.warning}", file=sys.stderr)
        rows.append(
            {
                "file": str(source),
                "output": str(target),
                "codec": result.codec.name,
                "mode": result.codec.mode,
                "transfer_syntax": str(result.codec.transfer_syntax),
                "transfer_syntax_name": result.codec.label,
                "target_ratio": ratio,
                "achieved_ratio": round(result.ratio, 3),
                "target_reached": outcome.reached if outcome else None,
                "reason": outcome.reason if outcome else None,
                "upper_bound": result.upper_bound,
                "above_upper_bound": outcome.above_bound if outcome else None,
                "ratio": round(result.ratio, 3),
                "uncompressed_bytes": result.uncompressed_bytes,
                "compressed_bytes": result.compressed_bytes,
                "file_bytes": size,
                "encode_seconds": round(result.encode_seconds, 4),
                "seconds": round(time.perf_counter() - start, 4),
                "sop_instance_uid": str(result.dataset.SOPInstanceUID),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(
                f"{r['file']} -> {r['output']}: {r['codec']} {r['mode']}, {r['transfer_syntax']} "
                f"({r['transfer_syntax_name']}), ratio {r['ratio']:.2f}:1"
                + ("" if r["target_ratio"] is None else f" (target {r['target_ratio']:g}:1 {'reached' if r['target_reached'] else 'NOT reached'})")
                + f", {r['seconds']:.3f} s"
            )
    return status


def cmd_verify(args) -> int:
    result = verify(read_dataset(args.original), read_dataset(args.compressed))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        m = result.metrics
        psnr = "inf (identical)" if m.identical else f"{m.psnr:.2f} dB"
        print(
            f"claims lossless: {'yes' if result.claims_lossless else 'no'}; ratio {m.ratio:.2f}:1, "
            f"{m.bpp:.3f} bpp; PSNR {psnr}; SSIM {m.ssim:.5f}; max error {m.max_error}; RMSE {m.rmse:.3f}"
            + (f"; LOSSY image ({result.history.label})" if result.history.lossy else "")
        )
    if not result.ok:
        _fail(f"{args.compressed} claims to be lossless but its pixels differ from {args.original} (max error {result.metrics.max_error}).")
        return EXIT_LOSSLESS_VIOLATION
    return EXIT_OK


def cmd_ingest(args) -> int:
    import os

    from .ingest import ingest
    from .jobs import Jobs
    from .store import Store

    store = Store(args.data or os.environ.get("RADPRESS_DATA", "var"))
    results = []
    for result in ingest(store, args.paths):
        results.append(result)
        if not args.json:
            reason = f" ({result.reason})" if result.reason else ""
            print(f"{result.status:<9} {result.name}{reason}", file=sys.stderr if result.status == "rejected" else sys.stdout)
    studies = sorted({r.study_uid for r in results if r.status == "stored"})
    jobs = []
    if not args.no_jobs and studies:
        runner = Jobs(store, workers=args.workers)
        for uid in studies:
            runner.submit(uid)
        jobs = runner.run_pending(progress=None if args.json else _print_progress)
    for job in jobs:  # a lossy copy that missed its target is said, as by compress
        for item in job.get("warnings", []):
            print(f"warning: {item['sop_uid']}: {item['warning']}", file=sys.stderr)
    if args.json:
        print(json.dumps({"results": [r.to_dict() for r in results], "studies": studies, "jobs": jobs}, indent=2))
    return EXIT_BAD_INPUT if any(r.status == "rejected" for r in results) else EXIT_OK


def cmd_check(args) -> int:
    """Repair after a crash and compare the originals with the index; exit 1 when one is missing or replaced."""
    import os

    from .store import Store

    store = Store(args.data or os.environ.get("RADPRESS_DATA", "var"))
    report = store.check(verify=args.verify)
    if args.verify:  # strategy 5: masters the independent check refused are checked again, by a job of their study
        from .jobs import Jobs
        from .master import retry_failed_masters

        report["masters_retried"] = retried = retry_failed_masters(store)
        runner = Jobs(store)
        for study_uid in retried:
            runner.submit(study_uid)
    if args.json:
        print(json.dumps(report, indent=2))
    for key, items in report.items():
        for item in items if not args.json else ():
            print(f"{key.replace('_', ' '):<20} {item}")
    lost = report["missing_originals"] or report["replaced_originals"] or report["master_mismatches"]  # (a master: strategy 5)
    return EXIT_LOSSLESS_VIOLATION if lost else EXIT_OK


def cmd_users(args) -> int:
    import getpass
    import os

    from .store import Store
    from .users import Users

    users = Users(Store(args.data or os.environ.get("RADPRESS_DATA", "var")))
    if args.action == "list":
        for user in users.list():
            print(f"{user.name}\t{user.role}")
        return EXIT_OK
    if not args.name:
        raise InvalidOptionError(f"users {args.action} needs a user name.")
    if args.action == "remove":
        users.remove(args.name)
        print(f"removed {args.name}")
        return EXIT_OK
    password = args.password or os.environ.get("RADPRESS_PASSWORD")
    if password is None:
        password = getpass.getpass(f"Password for {args.name}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    user = users.add(args.name, password, args.role)
    print(f"added {user.name} ({user.role})")
    return EXIT_OK


def cmd_delete(args) -> int:
    """Delete a study or one of its series, after confirmation (typed UID on a terminal, else --yes); audited."""
    import getpass
    import os

    from .housekeeping import delete_series, delete_study
    from .present import human_size
    from .store import Store
    from .users import User

    store = Store(args.data or os.environ.get("RADPRESS_DATA", "var"))
    uid = args.series or args.study
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidOptionError("Deleting removes the originals for good; nothing was deleted.",
                                     hint="Pass --yes, or run the command in a terminal to confirm by typing the UID.")
        if input(f"Type {uid} to delete it with every copy made from it: ").strip() != uid:
            raise InvalidOptionError("Not confirmed: nothing was deleted.")
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = str(os.getuid())
    user = User(f"cli:{who}", "admin")  # whoever may open the data directory administers the archive; audited by name
    result = delete_series(store, user, args.study, args.series) if args.series else delete_study(store, user, args.study)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"deleted {result.instances} instance(s) in {len(result.series_uids)} series, {result.files} file(s), "
              f"{human_size(result.bytes_freed)} freed" + ("; the study is gone" if result.study_removed else ""))
    return EXIT_OK


def _print_progress(job: dict) -> None:
    print(f"job {job['id']}: {job['done'] + job['failed']}/{job['total']} instance(s), {job['mb_per_s']:.1f} MB/s", file=sys.stderr)


def cmd_lab(args) -> int:
    import os
    from pathlib import Path

    from .lab import LabConfig, run_lab, to_csv

    config = LabConfig.from_text(args.codecs, args.ratios)
    target = Path(args.target)
    if target.exists():
        files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
        datasets = []
        for path in files:
            try:
                ds = read_dataset(path)
                pixel_spec(ds)
            except RadPressError as exc:
                if target.is_file():
                    raise
                print(f"skipped {path}: {exc}", file=sys.stderr)
                continue
            datasets.append(ds)
        if not datasets:
            raise InvalidOptionError(f"No DICOM images in {target}.")
        result = run_lab(datasets, config, label=str(target))
    else:
        from .archive import study_lab
        from .store import Store

        data = Path(args.data or os.environ.get("RADPRESS_DATA", "var"))
        if not (data / "index.sqlite").exists():
            raise InvalidOptionError(f"{args.target} is neither a file nor a folder, and there is no archive at {data} to look it up in.",
                                     hint="Give a DICOM file or folder, or --data DIR for a study UID.")
        result = study_lab(Store(data), args.target, config)
    if args.csv:
        from .files import atomic_writer

        with atomic_writer(args.csv) as fh:
            fh.write(to_csv(result).encode())
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_lab_table(result))
    return EXIT_OK


def _lab_table(result: dict) -> str:
    lines = [f"{result['instances']} instance(s), {', '.join(result['modalities'])}; sweep {result['wall_s']:.1f} s",
             f"{'codec':<7} {'target':>7} {'ratio':>7} {'bpp':>7} {'PSNR min':>9} {'SSIM':>7} {'max err':>8} {'Dice min':>9} {'enc s':>6} {'dec s':>6}  ok"]
    for r in result["sweep"]:
        target = "lossless" if r["mode"] == "lossless" else f"{r['target_ratio']:g}:1"
        psnr = "inf" if r["psnr_min"] is None else f"{r['psnr_min']:.1f}"
        worst = min(r["dice_min"].values(), default=1.0)
        missed = "!" if not r.get("target_reached", True) else " "  # measured at another ratio than the one named
        lines.append(f"{r['codec']:<7} {target:>7} {r['achieved_ratio']:>7.2f}{missed}{r['bpp']:>7.3f} {psnr:>9} {r['ssim_mean']:>7.4f} "
                     f"{r['max_error']:>8} {worst:>9.4f} {r['encode_s']:>6.2f} {r['decode_s']:>6.2f}  {'yes' if r['passes'] else 'no'}")
    if any(not r.get("target_reached", True) for r in result["sweep"]):
        lines.append("! target ratio not reached within ±10 %: that row was measured at the achieved ratio")
    lines.append("")
    lines.append(f"{'variant':<16} {'link Mbit/s':>11} {'volume MB':>10} {'transmit s':>11} {'compress s':>11} {'decompress s':>13} {'total s':>8}")
    for t in result["transmission"]:
        if t["variant"] == "uncompressed" or "lossless" in t["variant"] or (result.get("current") and t["variant"].endswith(f" {result['current']['ratio']:g}:1")):
            lines.append(f"{t['variant']:<16} {t['link_mbit_s']:>11g} {t['volume_mb']:>10.3f} {t['transmission_s']:>11.3f} "
                         f"{t['compression_s']:>11.3f} {t['decompression_s']:>13.3f} {t['total_s']:>8.3f}")
    lines.append("")
    for codec, rec in result["recommendation"].items():
        lines.append(f"recommended {codec}: " + (f"{rec['ratio']:g}:1 ({rec['bpp']:.3f} bpp)" if rec["ratio"] else "no lossy ratio passes"))
    if result.get("current"):
        c = result["current"]
        lines.append(f"current {c['codec']} {c['ratio']:g}:1: {'passes' if c['passes'] else 'FAILS the criteria'}")
    return "\n".join(lines)


def cmd_bench(args) -> int:
    from .bench import run_bench

    return run_bench(json_path=args.json_out, as_json=args.json, repeat=args.repeat, archive_instances=args.instances,
                     lab=not args.no_lab, big=args.big, accuracy=not args.no_accuracy,
                     sections=args.section)


def _ratio(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ratio must be a number such as 10, not {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core", description="RadPress core: DICOM compression and checks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("info", help="describe DICOM images")
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("compress", help="write compressed copies of DICOM images")
    p.add_argument("files", nargs="+")
    p.add_argument("--codec", choices=CODEC_NAMES, required=True)
    p.add_argument("--mode", choices=MODES, default="lossless")
    p.add_argument("--ratio", type=_ratio, help=f"lossy target, {MIN_RATIO:g} to {MAX_RATIO:g}")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_compress)

    p = sub.add_parser("verify", help="compare a compressed file with its original")
    p.add_argument("original")
    p.add_argument("compressed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_verify)

    p = sub.add_parser("ingest", help="add files, folders and zip/tar archives to the archive")
    p.add_argument("paths", nargs="+")
    p.add_argument("--data", help="data directory (default: $RADPRESS_DATA or ./var)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-jobs", action="store_true", help="index only; make the strategy's artifacts later")
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(run=cmd_ingest)

    p = sub.add_parser("check", help="repair the archive after a crash; report missing or replaced originals")
    p.add_argument("--data", help="data directory (default: $RADPRESS_DATA or ./var)")
    p.add_argument("--verify", action="store_true", help="also compare every original's SHA-256 with the index (slow), "
                   "decode every lossless master again, and queue the masters the independent check refused to be checked again")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("users", help="add, remove or list users")
    p.add_argument("action", choices=("add", "remove", "list"))
    p.add_argument("name", nargs="?")
    p.add_argument("--role", choices=("admin", "radiologist", "demo"), default="radiologist")
    p.add_argument("--password", help="default: $RADPRESS_PASSWORD, a prompt, or one line on standard input")
    p.add_argument("--data", help="data directory (default: $RADPRESS_DATA or ./var)")
    p.set_defaults(run=cmd_users)

    p = sub.add_parser("delete", help="delete a study or a series with its originals and every copy (audited)")
    p.add_argument("study", help="Study Instance UID")
    p.add_argument("--series", help="delete only this Series Instance UID of the study")
    p.add_argument("--yes", action="store_true", help="confirmed: do not ask (required when not run in a terminal)")
    p.add_argument("--data", help="data directory (default: $RADPRESS_DATA or ./var)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_delete)

    p = sub.add_parser("lab", help="rate-distortion and task-agreement sweep with a recommended ratio")
    p.add_argument("target", help="a DICOM file, a folder of them, or a study UID in the archive")
    p.add_argument("--codecs", help="comma-separated, default j2k,htj2k,jxl")
    p.add_argument("--ratios", help="comma-separated lossy ratios, default 5,8,10,15,20,30,50,80,100")
    p.add_argument("--csv", help="also write the sweep table as CSV")
    p.add_argument("--data", help="data directory for a study UID (default: $RADPRESS_DATA or ./var)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_lab)

    p = sub.add_parser("bench", help="codec throughput and ratios on the pydicom-data images")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--json-out", default="bench-results.json", help="where to write the JSON results")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--instances", type=int, default=300, help="size of the CT series for the archive benchmark (0: skip)")
    p.add_argument("--no-lab", action="store_true", help="skip the quality-lab sweep")
    p.add_argument("--no-accuracy", action="store_true",
                   help="skip lossy ratio accuracy over every pydicom-data image and the lab-PSNR check against other decoders")
    p.add_argument("--big", type=int, default=30000, help="side of the very large image benchmark (0: skip)")
    p.add_argument("--section", action="append", help="run only this side-by-side section (repeatable)")
    p.set_defaults(run=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except RadPressError as exc:
        _fail(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (| head): nothing left to say
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:  # a bug, not bad input: still one line, never a traceback
        _fail(f"internal error, please report it: {type(exc).__name__}: {exc}")
        return EXIT_INTERNAL
