"""First pull of a ~100 MB image from a local registry: the image store vs a plain `skopeo copy`.

A throw-away `docker-registry` on 127.0.0.1 serves an image of a busybox base plus four 25 MB layers
of incompressible bytes (built once, cached under ~/.cache/osbox-test-images keyed by its content).
Each round, into fresh directories: the baseline `skopeo copy docker://… oci:DIR:x` (download and
verify only), and `ImageStore.pull` (the same copy, then every layer unpacked and verified against its
diff_id). The order alternates between rounds. Figures: medians and their ratio.

    python benchmarks/bench_image_pull.py [--quick]
"""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, Goal, Report, median, mib, parse_args

sys.path.insert(0, str(REPO))  # the test registry and image builder live with the image tests

from tests.integration.images.registry import (
    ImageSpec,
    OciLayoutBuilder,
    busybox_layer,
    file,
    tools_missing,
)

from osbox.server.images.local_registry import local_registry
from osbox.server.images.store import ImageStore, ImageStoreConfig

LAYER_BYTES = 25 * 10**6
LAYERS = 4
GOAL_RATIO = 2.0  # a pull is skopeo's copy plus unpacking every layer once
CACHE = Path.home() / ".cache" / "osbox-test-images"
BUILDER_VERSION = "1"  # bump when the image's recipe changes


def cached_layout(layer_bytes: int, layers: int) -> Path:
    """The benchmark image's OCI layout (ref name `big`), built unless the cache has it."""
    key = hashlib.sha256(f"{BUILDER_VERSION}:{layer_bytes}:{layers}".encode()).hexdigest()[:16]
    layout = CACHE / f"bench-pull-{key}"
    if (layout / "index.json").exists():
        return layout
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="building-", dir=CACHE))  # renamed into place when complete
    try:
        rng = random.Random(key)  # reproducible content: the cache key names it
        big = [[file(f"data/blob{i}.bin", rng.randbytes(layer_bytes))] for i in range(layers)]
        OciLayoutBuilder(staging).add("big", ImageSpec([busybox_layer(), *big]))
        staging.rename(layout)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return layout


def time_skopeo_copy(reference: str, destination: Path) -> float:
    """Seconds of the baseline: a plain `skopeo copy` of the image into a fresh OCI layout."""
    start = time.perf_counter()
    source = f"docker://{reference}"
    command = ["skopeo", "copy", "-q", "--src-tls-verify=false", source, f"oci:{destination}:x"]
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def time_store_pull(reference: str, root: Path) -> float:
    """Seconds of a first `ImageStore.pull` into a fresh store (copy, then unpack every layer)."""
    store = ImageStore(ImageStoreConfig(root=root))
    start = time.perf_counter()
    store.pull(reference)
    return time.perf_counter() - start


def main() -> None:
    args = parse_args(__doc__ or "")
    reason = tools_missing()
    if reason is not None:
        sys.exit(f"bench_image_pull: {reason}")
    report = Report.start("image_pull", args.quick)
    rounds = 2 if args.quick else 5
    layer_bytes = LAYER_BYTES // 10 if args.quick else LAYER_BYTES
    layout = cached_layout(layer_bytes, LAYERS)
    skopeo_times: list[float] = []
    store_times: list[float] = []
    with local_registry() as registry:
        registry.push(layout, "big", "big:1")
        reference = registry.ref("big:1")
        for round_number in range(rounds):
            work = Path(tempfile.mkdtemp(prefix="bench-image-pull-", dir="/var/tmp"))
            try:
                if round_number % 2 == 0:
                    skopeo_times.append(time_skopeo_copy(reference, work / "skopeo"))
                    store_times.append(time_store_pull(reference, work / "store"))
                else:
                    store_times.append(time_store_pull(reference, work / "store"))
                    skopeo_times.append(time_skopeo_copy(reference, work / "skopeo"))
            finally:
                shutil.rmtree(work)
    image_bytes = LAYERS * layer_bytes
    ratio = median(store_times) / median(skopeo_times)
    print(f"image: {mib(image_bytes)} in {LAYERS} layers + busybox, {rounds} rounds")
    print(f"skopeo copy       median {median(skopeo_times):.3f} s   ({[round(t, 3) for t in skopeo_times]})")
    print(f"ImageStore.pull   median {median(store_times):.3f} s   ({[round(t, 3) for t in store_times]})")
    print(f"ratio pull / skopeo copy: {ratio:.2f}")
    report.figures["image_pull"] = {
        "image_bytes": image_bytes,
        "skopeo_copy_s": skopeo_times,
        "store_pull_s": store_times,
        "ratio": ratio,
    }
    report.goals.append(Goal("first pull / skopeo copy (median)", ratio, GOAL_RATIO, "<=", "x"))
    report.emit()


if __name__ == "__main__":
    main()
