"""The whole MiniOneRec pipeline on one dataset, one script per arrow of the README diagram:

    data prep -> SIDs -> split CSVs -> test sample -> popularity + SASRec -> SFT -> evaluate -> RL
    -> evaluate -> report

Every stage runs the command a researcher would type (printed before it runs) and writes into its
own folder `runs/stages/<stage>-<hash>/`, named by a hash of its commands; those commands name the
folders of the stages before it, so one folder is one exact recipe from the raw data on. A stage
whose folder holds a finished marker (`.done.json`: commands and wall time) is skipped, by this
run or by any other run that shares the recipe so far (ablate.py's variants reuse each other's
SFT, say); a stage that runs redoes the stages that read its folder. `--force_stages rl` (or
`--force` for all) redoes a stage, and every stage after it.
The run itself is `runs/<run>/run.json` (its settings and stage folders); the report
(`results/<run>/results.md`, `results.json`, PNGs) compares popularity, SASRec, SFT and SFT+RL on
the same test rows, with a paired bootstrap of SFT+RL against SFT.

Settings come from a profile, a JSON file under config/profiles/ (`--profile small`) that passes
every flag a stage relies on explicitly, so a script's defaults changing does not change a run;
`--set rl.reward_type=rule` overrides one flag of one stage (sasrec, sft, eval, rl); rl settings
name files by placeholder: {sasrec_checkpoint}, {item_embeddings}, {train_csv}, {valid_csv}.

    python pipeline.py                                  # built-in MovieLens-100k, small profile
    python pipeline.py --profile smollm2                # pretrained SmolLM2-135M-Instruct
    python pipeline.py --data_dir ../shared/data/Office_Products --category Office_Products
    python pipeline.py --data_dir upstream/data/Amazon --category Industrial_and_Scientific
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import data
from report import write_report
from runtime import ArgumentParser, InputError, run_main

REPO = Path(__file__).resolve().parent
PROFILES_DIR = REPO / "config" / "profiles"
# the sections of a profile that are one script's flags (eval: both evaluations)
FLAG_SECTIONS = ("sasrec", "sft", "eval", "rl")
# stages in order; --until stops after one of them
STAGES = ("backbone", "data", "sids", "split_csvs", "test_sample", "sasrec", "sft", "eval_sft", "embeddings", "rl",
          "eval_rl")
# files other stages made, named in rl settings as {name}: `--set rl.cf_path={sasrec_checkpoint}`
# (the sasrec reward), `--set rl.ada_path={item_embeddings}` (the semantic reward); the dataset's
# files are {train_csv}, {valid_csv}, ... (`--set rl.train_file={valid_csv}`: RL prompts from
# rows neither SFT nor SASRec trained on)
RL_PLACEHOLDERS = ("sasrec_checkpoint", "item_embeddings")
DATASET_FILES = ("train.csv", "valid.csv", "test.csv", "index.json", "item.json", "info.txt")
logger = logging.getLogger("pipeline")


def load_profile(name_or_path: str) -> dict:
    """A profile by name (config/profiles/<name>.json) or path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES_DIR / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.json"))
        raise InputError(f"--profile {name_or_path}: no file {path} (profiles: {', '.join(known)})")
    profile = json.loads(path.read_text())
    profile["name"] = path.stem
    return profile


def apply_overrides(profile: dict, overrides: list[str]) -> dict:
    """A copy of the profile with `section.flag=value` overrides (values stay strings, as typed)."""
    profile = json.loads(json.dumps(profile))
    for override in overrides:
        key, sep, value = override.partition("=")
        section, dot, flag = key.partition(".")
        if not sep or not dot or not flag:
            raise InputError(f"--set {override!r}: expected SECTION.FLAG=VALUE, e.g. rl.reward_type=rule")
        if section not in FLAG_SECTIONS:
            raise InputError(f"--set {override!r}: section {section!r} is not one of {', '.join(FLAG_SECTIONS)}")
        profile[section][flag] = value
    return profile


def as_flags(settings: dict, fire: bool) -> list[str]:
    """`--flag value` pairs. argparse scripts take a true boolean as a bare switch (and omit a false
    one); fire scripts take `--flag True`."""
    flags = []
    for key, value in settings.items():
        if isinstance(value, bool) and not fire:
            flags += [f"--{key}"] if value else []
        else:
            flags += [f"--{key}", str(value)]
    return flags


def find_dataset(data_dir: Path, category: str) -> dict[str, Path]:
    """The six dataset files of --data_dir: either flat (train.csv, ..., info.txt) or the original's
    data/Amazon layout (train/<category>*.csv, index/<category>.index.json, info/<category>*.txt)."""
    flat = {name: data_dir / name for name in DATASET_FILES}
    if all(path.is_file() for path in flat.values()):
        return flat

    def one(pattern: str) -> Path | None:
        found = sorted(data_dir.glob(pattern))
        return found[0] if found else None

    amazon = {
        "train.csv": one(f"train/{category}*.csv"),
        "valid.csv": one(f"valid/{category}*11.csv") or one(f"valid/{category}*.csv"),
        "test.csv": one(f"test/{category}*11.csv") or one(f"test/{category}*.csv"),
        "index.json": one(f"index/{category}.index.json"),
        "item.json": one(f"index/{category}.item.json"),
        "info.txt": one(f"info/{category}*.txt"),
    }
    if (data_dir / "train").is_dir():
        missing = [name for name, path in amazon.items() if path is None]
        if missing:
            raise InputError(f"--data_dir {data_dir} (original data/Amazon layout, --category {category}): "
                             f"no file for {', '.join(missing)}")
        return amazon
    missing = [name for name, path in flat.items() if not path.is_file()]
    raise InputError(f"--data_dir {data_dir}: missing {', '.join(missing)} (it needs {', '.join(DATASET_FILES)}, "
                     "or the original's data/Amazon folders train/ valid/ test/ index/ info/)")


class Pipeline:
    """Runs stages into content-addressed folders of a shared store (see the module docstring)."""

    def __init__(self, store: Path, force_stages: set[str], force: bool):
        self.store = store
        self.force_stages = force_stages
        self.force = force
        self.stages: dict[str, dict] = {}
        self.redo_rest = False  # a stage was forced: every stage after it redoes too
        self.ran: list[str] = []  # folders of the stages that ran in this invocation

    def stage(self, name: str, build: Callable[[Path], list[list[str]]]) -> Path:
        """Run the commands `build(folder)` into the stage's folder, unless a finished marker there
        says they ran and, in this invocation, no stage before it was forced and no stage it reads
        (one whose folder its commands name) ran. Returns the folder."""
        recipe = json.dumps([[str(part) for part in command] for command in build(Path("{out}"))])
        out = self.store / f"{name}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
        commands = [[str(part) for part in command] for command in build(out)]
        self.store.mkdir(parents=True, exist_ok=True)
        # two pipelines (or ablation cells) sharing the store: the second waits for the first's stage
        with open(self.store / f"{out.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._run_stage(name, out, commands)

    def _run_stage(self, name: str, out: Path, commands: list[list[str]]) -> Path:
        marker = out / ".done.json"
        reads_new = any(folder in part for folder in self.ran for command in commands for part in command)
        forced = self.force or name in self.force_stages or self.redo_rest
        if marker.is_file() and not (forced or reads_new):
            done = json.loads(marker.read_text())
            self.stages[name] = {"dir": str(out), "seconds": done["seconds"], "commands": commands, "reused": True}
            logger.info("[%s] done before in %s (%.0f s), skipped", name, out.name, done["seconds"])
            return out
        self.redo_rest = self.redo_rest or forced
        self.ran.append(str(out))
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        start = time.time()
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        for command in commands:
            logger.info("[%s] $ %s", name, shlex.join(command))
            result = subprocess.run(command, cwd=REPO, env=env)
            if result.returncode:
                raise SystemExit(f"stage {name} failed (exit {result.returncode}): {shlex.join(command)}")
        seconds = time.time() - start
        data.write_json({"seconds": seconds, "commands": commands}, marker)
        self.stages[name] = {"dir": str(out), "seconds": seconds, "commands": commands, "reused": False}
        logger.info("[%s] finished in %.0f s", name, seconds)
        return out


def finished_stage(run_dir: Path, name: str) -> tuple[Path, list[list[str]]]:
    """A finished stage of a run (`runs/<run>/run.json`): its folder and the commands that made it
    (scripts/run_twice.py and scripts/confirm_heldout.py replay them)."""
    run_json = Path(run_dir) / "run.json"
    if not run_json.is_file():
        raise InputError(f"{run_json}: not found (run the pipeline first)")
    stages = json.loads(run_json.read_text())["stages"]
    if name not in stages:
        raise InputError(f"{run_json}: no stage {name!r} (stages: {', '.join(stages)})")
    folder = Path(stages[name]["dir"])
    if not (folder / ".done.json").is_file():
        raise InputError(f"{folder}: stage {name} has not finished (no .done.json)")
    return folder, stages[name]["commands"]


def run_analysis_parser(description: str, results_subdir: str) -> ArgumentParser:
    """The flags every script that reads one finished run shares (scripts/run_twice.py,
    confirm_heldout.py, sasrec_rerank.py): the run, the runs folder, where its results go."""
    parser = ArgumentParser(description=description)
    parser.add_argument("--run", required=True, help="a pipeline run under --runs_dir (its run.json names the stages)")
    parser.add_argument("--runs_dir", default=str(REPO / "runs"))
    parser.add_argument("--out_dir", default=str(REPO / "results" / results_subdir))
    return parser


def heldout_dir(runs_dir, run: str) -> Path:
    """Where scripts/confirm_heldout.py evaluates a run on its held-out rows (read by sasrec_rerank.py --heldout)."""
    return Path(runs_dir) / "heldout" / run.replace("/", "-")


def write_analysis(report: dict, out_dir, name: str) -> Path:
    """An analysis script's results file `<out_dir>/<name>.json` (written atomically), also printed."""
    out = Path(out_dir) / f"{name}.json"
    data.write_json(report, out, indent=2)
    print(json.dumps(report, indent=2))
    return out


def git_state() -> tuple[str, list[str]]:
    """The commit the code ran at (+ '-dirty' when tracked files differ from it), and those files."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return (git("rev-parse", "HEAD").strip() or "unknown") + ("-dirty" if changed else ""), changed


def build_parser():
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--profile", "--backbone", dest="profile", default="small",
                        help="settings profile: a name under config/profiles/ (small: 3.4M-parameter model, "
                             "SmolLM2 architecture, hidden 64 x 4 layers, random init; smollm2: pretrained "
                             "SmolLM2-135M-Instruct) or a JSON file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FLAG=VALUE",
                        help="override one flag of the profile (sections: sasrec, sft, eval, rl); repeatable")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of SASRec, SFT and RL (default: the profile's); the test sample keeps the "
                             "profile's test_seed so runs stay paired")
    parser.add_argument("--test_rows", type=int, default=None,
                        help="rows of the seeded sample every model is scored on (default: the profile's; -1, "
                             "small's, scores every row of the split: 9,835 on ML-100k resolve a paired HR@10 "
                             "difference to about 0.004, a 2,000-row sample to about 0.010)")
    parser.add_argument("--data_dir", default=None,
                        help="a prepared dataset instead of the built-in MovieLens-100k: a folder with train.csv, "
                             "valid.csv, test.csv, index.json, item.json, info.txt, or the original's data/Amazon "
                             "folder (files found by --category); its SIDs are used as given")
    parser.add_argument("--category", default=None,
                        help="category worded into the prompts and used to find files in a data/Amazon folder "
                             "(default: ml-100k for the built-in data, else the --data_dir folder's name)")
    parser.add_argument("--run", default=None, help="run name (default: <dataset>-<profile>)")
    parser.add_argument("--runs_dir", default=None,
                        help="folder of the runs and the shared stage store (default: runs/ beside pipeline.py)")
    parser.add_argument("--results_dir", default=None,
                        help="the report goes to RESULTS_DIR/<run>/ (default: results/ beside pipeline.py)")
    parser.add_argument("--cache", default=None,
                        help="downloads and converted models (default: $MINIONEREC_CACHE or ~/.cache/minionerec)")
    parser.add_argument("--force", action="store_true", help="redo every stage")
    parser.add_argument("--force_stages", default="", help="comma-separated stages to redo, with every stage after them")
    parser.add_argument("--until", choices=STAGES, default="eval_rl",
                        help="last stage to run (e.g. eval_sft: no RL); the report covers what exists")
    parser.add_argument("--sid_method", choices=["rqkmeans", "rqkmeans_constrained", "rqvae", "rqkmeans_plus"],
                        default="rqkmeans",
                        help="residual quantiser of rq/build_sids.py (built-in data only)")
    parser.add_argument("--eval_split", choices=["test", "valid"], default="test",
                        help="the rows every model is scored on: a sample of test.csv (default), or of valid.csv to "
                             "choose settings without looking at test rows (ablate.py --pipeline_args '--eval_split "
                             "valid'); SASRec early-stops on valid.csv, so its own score there is optimistic")
    parser.add_argument("--nproc", type=int, default=2,
                        help="processes for SFT/RL/evaluation (torchrun, gloo on CPU; one thread each: on 2 cores "
                             "two single-thread processes outrun one two-thread process)")
    return parser


def run(argv=None) -> Path:
    """Run the pipeline; returns the report folder (results.md, results.json, PNGs)."""
    args = build_parser().parse_args(argv)
    commit, changed_files = git_state()  # the code as the run starts
    profile = apply_overrides(load_profile(args.profile), args.overrides)
    if args.seed is not None:
        for section in ("sasrec", "sft", "rl"):
            profile[section]["seed"] = args.seed
    unknown = set(filter(None, args.force_stages.split(","))) - set(STAGES)
    if unknown:
        raise InputError(f"--force_stages: unknown stage(s) {', '.join(sorted(unknown))}; stages: {', '.join(STAGES)}")
    if args.category is not None and not args.category.strip():
        raise InputError("--category is empty")

    if args.data_dir:
        data_dir = Path(args.data_dir).resolve()
        category = args.category or data_dir.name
        dataset_name = category
    else:
        category = args.category or "ml-100k"
        dataset_name = "ml100k"
    runs_dir = Path(args.runs_dir or REPO / "runs").resolve()
    run_name = args.run or f"{dataset_name}-{profile['name']}"
    run_dir = runs_dir / run_name
    cache = Path(args.cache or os.environ.get("MINIONEREC_CACHE", str(Path.home() / ".cache" / "minionerec")))
    pipe = Pipeline(runs_dir / "stages", set(filter(None, args.force_stages.split(","))), args.force)
    py = sys.executable
    launch = [py] if args.nproc == 1 else [py, "-m", "torch.distributed.run", "--standalone",
                                           f"--nproc_per_node={args.nproc}"]
    last = STAGES.index(args.until)

    def wanted(stage: str) -> bool:
        return STAGES.index(stage) <= last

    backbone_settings = profile["backbone"]
    if "path" in backbone_settings:  # any HF model folder, used as it is
        backbone = Path(backbone_settings["path"]).resolve()
        if not backbone.is_dir():
            raise InputError(f"--profile {args.profile}: backbone path {backbone} is not a folder")
    else:  # converted from the SmolLM2 GGUF wheel into the shared cache; the stage folder holds the marker
        models = cache / "models"
        backbone = models / backbone_settings["dir"]
        convert = [py, "convert_gguf.py", "--output_dir", str(models / "SmolLM2-135M-Instruct")]
        if "hidden" in backbone_settings:
            convert += ["--small_dir", str(backbone), "--small_hidden", str(backbone_settings["hidden"]),
                        "--small_layers", str(backbone_settings["layers"]),
                        "--small_heads", str(backbone_settings["heads"])]
        pipe.stage("backbone", lambda out: [convert])

    if args.data_dir:
        files = {name: str(path) for name, path in find_dataset(data_dir, category).items()}
    else:
        prepared = pipe.stage("data", lambda out: [
            [py, "data/prepare_ml100k.py", "--output_dir", out, "--cache_dir", cache]])
        sids = pipe.stage("sids", lambda out: [
            [py, "rq/build_sids.py", "--item_meta_path", prepared / "item.json", "--output_dir", out,
             "--method", args.sid_method]])
        split = pipe.stage("split_csvs", lambda out: [
            [py, "convert_dataset.py", "--data_dir", prepared, "--output_dir", out,
             "--index_path", sids / "index.json", "--item_meta_path", prepared / "item.json"]])
        files = {"train.csv": str(split / "train.csv"), "valid.csv": str(split / "valid.csv"),
                 "test.csv": str(split / "test.csv"), "index.json": str(sids / "index.json"),
                 "item.json": str(prepared / "item.json"), "info.txt": str(split / "info.txt")}

    # every model is scored on the same seeded sample of test (or validation) rows; a stage of its own,
    # so new SIDs (or a new dataset) make a new sample
    sample = pipe.stage("test_sample", lambda out: [
        [py, "scripts/sample_rows.py", "--input", files[f"{args.eval_split}.csv"], "--output", out / "test.csv",
         "--rows", profile["test_rows"] if args.test_rows is None else args.test_rows,
         "--seed", profile["test_seed"]]])
    test_csv = str(sample / "test.csv")
    outputs: dict[str, str] = {"test_csv": test_csv}

    if wanted("sasrec"):
        sasrec = pipe.stage("sasrec", lambda out: [
            [py, "sasrec.py", "--train_file", files["train.csv"], "--valid_file", files["valid.csv"],
             "--test_file", test_csv, "--index_file", files["index.json"],
             *as_flags(profile["sasrec"], fire=False),
             "--result_json_path", out / "sasrec.json", "--checkpoint_path", out / "sasrec.pt"]])
        outputs["sasrec_json"] = str(sasrec / "sasrec.json")

    def evaluate(checkpoint: Path):
        def build(out: Path):
            predictions = out / "predictions.json"
            return [
                launch + ["evaluate.py", "--base_model", checkpoint, "--info_file", files["info.txt"],
                          "--category", category, "--test_data_path", test_csv, "--result_json_data", predictions,
                          *as_flags(profile["eval"], fire=False)],
                [py, "calc.py", "--path", predictions, "--item_path", files["info.txt"],
                 "--out_json", out / "metrics.json", "--out_png", out / "metrics.png"],
            ]
        return build

    if wanted("sft"):
        sft = pipe.stage("sft", lambda out: [launch + [
            "sft.py", "--base_model", backbone, "--train_file", files["train.csv"], "--eval_file", files["valid.csv"],
            "--output_dir", out, "--sid_index_path", files["index.json"], "--item_meta_path", files["item.json"],
            "--category", category, *as_flags(profile["sft"], fire=True)]])
        outputs["sft_dir"] = str(sft)
    if wanted("eval_sft"):
        outputs["eval_sft_dir"] = str(pipe.stage("eval_sft", evaluate(sft / "final_checkpoint")))
    if wanted("rl"):
        needs = {key for key in RL_PLACEHOLDERS if any(f"{{{key}}}" in str(v) for v in profile["rl"].values())}
        resolved = {name.replace(".", "_"): str(path) for name, path in files.items()}
        if "item_embeddings" in needs:
            if args.data_dir:
                embedded = pipe.stage("embeddings", lambda out: [
                    [py, "rq/embeddings.py", "--item_meta_path", files["item.json"], "--output_path",
                     out / "item_emb.npy"]])
                resolved["item_embeddings"] = str(embedded / "item_emb.npy")
            else:
                resolved["item_embeddings"] = str(sids / "item_emb.npy")
        if "sasrec_checkpoint" in needs:
            if not wanted("sasrec"):
                raise InputError("the rl settings use {sasrec_checkpoint}, but --until stops before the sasrec stage")
            resolved["sasrec_checkpoint"] = str(sasrec / "sasrec.pt")
        rl_settings = {key: str(value).format_map(resolved) if isinstance(value, str) else value
                       for key, value in profile["rl"].items()}
        # a setting naming a flag the stage passes itself (train_file, say) replaces it in place
        rl = pipe.stage("rl", lambda out: [launch + ["rl.py", *as_flags({
            "model_path": sft / "final_checkpoint", "train_file": files["train.csv"],
            "eval_file": files["valid.csv"], "info_file": files["info.txt"],
            "sid_index_path": files["index.json"], "item_meta_path": files["item.json"],
            "category": category, "output_dir": out, **rl_settings}, fire=True)]])
        outputs["rl_dir"] = str(rl)
    if wanted("eval_rl"):
        outputs["eval_rl_dir"] = str(pipe.stage("eval_rl", evaluate(rl / "final_checkpoint")))

    record = {"run": run_name, "command": ["pipeline.py", *(argv if argv is not None else sys.argv[1:])],
              "commit": commit, "changed_files": changed_files, "profile": profile, "dataset": files, "category": category,
              "eval_split": args.eval_split,
              "outputs": outputs, "stages": pipe.stages}
    run_dir.mkdir(parents=True, exist_ok=True)
    data.write_json(record, run_dir / "run.json", indent=2)
    report_dir = Path(args.results_dir or REPO / "results") / run_name
    write_report(run_dir / "run.json", report_dir)
    return report_dir


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print((run(argv) / "results.md").read_text())


if __name__ == "__main__":
    run_main(main)
