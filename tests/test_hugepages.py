"""The program runs itself again with huge pages for XLA's buffers exactly where that helps (jaxmerge.hugepages),
keeping its arguments, and never inside a process that is not the program."""
import os
import platform
import subprocess
import sys

import pytest

from jaxmerge.hugepages import SETTING, THP_MODE, huge_pages_env, without_huge_pages

MADVISE = "always [madvise] never\n"
GLIBC = ("glibc", "2.36")


def test_asks_for_huge_pages_where_the_kernel_gives_them_on_request():
    assert huge_pages_env({"A": "1"}, MADVISE, GLIBC) == {"A": "1", "GLIBC_TUNABLES": SETTING}
    kept = huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.check=0"}, MADVISE, GLIBC)
    assert kept["GLIBC_TUNABLES"] == f"glibc.malloc.check=0:{SETTING}"


@pytest.mark.parametrize("environ, thp, libc", [
    ({"GLIBC_TUNABLES": SETTING}, MADVISE, GLIBC),                 # already running with it: no loop
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, MADVISE, GLIBC),  # the user's own choice
    ({"JAXMERGE_HUGE_PAGES": "off"}, MADVISE, GLIBC),
    ({}, "[always] madvise never\n", GLIBC),                       # the kernel gives them anyway
    ({}, "always madvise [never]\n", GLIBC),                       # nothing to gain
    ({}, MADVISE, ("glibc", "2.34")),                              # no such tunable before 2.35
    ({}, MADVISE, ("", "")),                                       # musl, or unknown
], ids=["set", "user-set", "opted-out", "always", "never", "old-glibc", "not-glibc"])
def test_changes_nothing_where_it_cannot_help(environ, thp, libc):
    assert huge_pages_env(environ, thp, libc) is None


def test_a_program_runs_again_with_its_arguments_and_the_tunable():
    code = ("from jaxmerge.hugepages import with_huge_pages; with_huge_pages(); import os, sys; "
            "print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "JAXMERGE_HUGE_PAGES")}
    out = subprocess.run([sys.executable, "-c", code, "a b", "-x"], capture_output=True, text=True, env=env,
                         check=True).stdout.split(" ", 1)
    mode = THP_MODE.read_text() if THP_MODE.exists() else ""
    expected = huge_pages_env(env, mode, platform.libc_ver()) if sys.platform == "linux" else None
    assert out[0] == (SETTING if expected else "None")
    assert out[1].strip() == "['a b', '-x']"


@pytest.mark.parametrize("args, asks", [
    (["evolve", "c.yml"], True), (["--debug", "evolve", "c.yml"], True), (["bench", "--quick"], True),
    (["merge", "r.yml", "out"], False), (["inspect", "m"], False), (["--help"], False), ([], False)])
def test_only_the_repeating_commands_ask(args, asks):
    """evolve / bench run compiled programs again and again; a one-shot merge is faster without huge pages."""
    from jaxmerge.cli import repeats_programs
    assert repeats_programs(args) is asks


def test_the_command_line_called_in_process_does_not_run_again(tmp_path):
    """main(argv) is a library call (tests, `python -m benchmarks`): it must not replace the calling process."""
    from jaxmerge.cli import main
    env_before = os.environ.get("GLIBC_TUNABLES")
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert os.environ.get("GLIBC_TUNABLES") == env_before


def test_benchmarks_hand_their_programs_the_users_environment():
    env = huge_pages_env({"A": "1", "GLIBC_TUNABLES": "glibc.malloc.check=0"}, MADVISE, GLIBC)
    assert without_huge_pages(env) == {"A": "1", "GLIBC_TUNABLES": "glibc.malloc.check=0"}
    assert without_huge_pages(huge_pages_env({"A": "1"}, MADVISE, GLIBC)) == {"A": "1"}


def test_a_repeating_command_run_again_still_ends_with_one_line_and_its_code(tmp_path):
    """Through the re-execution (where it happens), bad input is still one line on stderr and exit 2."""
    got = subprocess.run([sys.executable, "-m", "jaxmerge.cli", "evolve", str(tmp_path / "nope.yml"), "--out",
                          str(tmp_path / "run")], capture_output=True, text=True)
    assert got.returncode == 2
    assert got.stderr.strip().splitlines() == [f"jaxmerge evolve: error: expected a run config file at "
                                               f"{tmp_path / 'nope.yml'}, found none"]
    assert not (tmp_path / "run").exists()
