"""The one-command demo: synthetic CrowdHuman -> class list -> CSV annotations -> train -> validate -> visualise.

Every step runs the project's real scripts, as a user would. On a 2-core CPU it takes about 4 minutes
(bf16; about twice that in fp32).

Usage:
    python tools/demo.py --output_dir demo_output
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="demo_output", help="where everything goes (default demo_output)")
    parser.add_argument("--num_train", type=int, default=250, help="synthetic training images (default 250)")
    parser.add_argument("--num_val", type=int, default=50, help="synthetic validation images (default 50)")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    parser.add_argument("--device", default="cpu", help="torch device for training and inference (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and training (default 0)")
    return parser


def run(step: str, command: list) -> None:
    print(f"\n=== {step}: {' '.join(command)}", flush=True)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *command], cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"demo: step '{step}' failed with exit status {result.returncode}")
    print(f"=== {step}: done in {time.perf_counter() - start:.0f} s", flush=True)


def main(args: argparse.Namespace) -> None:
    out = os.path.abspath(args.output_dir)
    data_dir = os.path.join(out, "CrowdHuman")
    classes_csv = os.path.join(out, "crowdhuman.csv")
    weights_dir = os.path.join(out, "weights")
    val_dir = os.path.join(out, "val_results")
    vis_dir = os.path.join(out, "vis_results")
    start = time.perf_counter()
    image_size = ["--min_side", "240", "--max_side", "320"]

    run("synthetic CrowdHuman", ["tools/make_synthetic_crowdhuman.py", "--output_dir", data_dir,
                                 "--num_train", str(args.num_train), "--num_val", str(args.num_val),
                                 "--width", "320", "--height", "240", "--seed", str(args.seed)])
    run("class mapping", ["build_class_mapping_file.py", "--class_names_txt", "class_names/crowdhuman.txt",
                          "--class_names_csv", classes_csv])
    run("CSV annotations", ["build_annotations_file.py", "--dataset", "crowd_human", "--data_dir", data_dir])
    train_csv = os.path.join(data_dir, "train_annotations.csv")
    val_csv = os.path.join(data_dir, "valid_annotations.csv")
    # A small ResNet-18 (64-channel heads) trained from scratch: no download, minutes on a CPU.
    run("train", ["train.py", "--dataset", "csv", "--csv_classes", classes_csv, "--csv_train", train_csv,
                  "--csv_val", val_csv, "--depth", "18", "--feature_size", "64", "--no_pretrained",
                  "--epochs", str(args.epochs), "--batch_size", "8", "--optimizer", "adam", "--lr", "1e-3",
                  "--warmup_iters", "50", "--lr_schedule", "cosine", "--val_every", str(args.epochs), "--workers", "1",
                  "--device", args.device, "--seed", str(args.seed), "--output_dir", weights_dir, *image_size])
    model = os.path.join(weights_dir, "best.pt")
    run("validate", ["csv_validation.py", "--csv_classes", classes_csv, "--csv_val", val_csv, "--model_path", model,
                     "--device", args.device, "--output_dir", val_dir, "--workers", "1", *image_size])
    run("visualise", ["visualize.py", "--dataset", "csv", "--csv_classes", classes_csv, "--csv_val", val_csv,
                      "--model_path", model, "--device", args.device, "--output_dir", vis_dir, *image_size])

    with open(os.path.join(val_dir, "metrics.json")) as handle:
        metrics = json.load(handle)
    print(f"\ndemo finished in {(time.perf_counter() - start) / 60:.1f} min")
    for name, result in metrics["per_class"].items():
        line = f"  {name:7s} AP@0.5 {result['ap']:.3f}"
        crowd = metrics.get("crowdhuman", {}).get(name)
        if crowd:
            line += f"   CrowdHuman AP {crowd['ap']:.3f}  MR^-2 {crowd['mr']:.3f}  JI {crowd['ji']:.3f}"
        print(line)
    print(f"outputs:\n  data          {data_dir}\n  checkpoints   {weights_dir} (best.pt, last.pt, "
          f"metrics.jsonl, training_curves.png)\n  validation    {val_dir} (metrics.json, PR curves, detections)"
          f"\n  pictures      {vis_dir}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
