"""What users build and ship stays small, and profiling keeps its symbols.

`cargo run --release`, `cargo install` and the Dockerfile build the release
profile. With `debug = 1` there the binary was 238 MB, 207 MB of it DWARF;
without debug info it is about 31 MB. Building a release binary takes
minutes on a CI machine, so this checks the profiles that decide it: the
release profile has no debug info, and a `profiling` profile (release code
with line tables, docs/performance.md) exists for perf.
"""

from __future__ import annotations

import tomllib

import pytest

from silt_harness import REPO_ROOT

pytestmark = pytest.mark.silt_only(reason="Silt's Cargo build profiles")

#: `debug` values that mean "no debug info" to cargo.
NO_DEBUG_INFO = {False, 0, "none"}


def profiles() -> dict:
    with open(REPO_ROOT / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["profile"]


def test_the_release_profile_carries_no_debug_info():
    release = profiles()["release"]
    assert release.get("debug", False) in NO_DEBUG_INFO or release.get("strip") in {True, "debuginfo", "symbols"}, (
        f"[profile.release] {release}: debug info makes the installed binary ~8x larger; "
        "profile with --profile profiling instead")


def test_a_profiling_profile_keeps_line_tables():
    profiling = profiles().get("profiling")
    assert profiling is not None, "[profile.profiling] is what docs/performance.md builds for perf"
    assert profiling.get("inherits") == "release", profiling
    assert profiling.get("debug") not in NO_DEBUG_INFO | {None}, profiling
    assert "--profile profiling" in (REPO_ROOT / "docs" / "performance.md").read_text()


def test_the_image_builds_the_release_profile():
    dockerfile = (REPO_ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    assert "cargo build --release" in dockerfile, "the image ships the (small) release binary"
