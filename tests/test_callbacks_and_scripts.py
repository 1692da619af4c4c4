"""Edges of the async API: callbacks that misbehave, functions defined in a script."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import poolparty


def test_a_callback_that_raises_changes_neither_the_result_nor_the_callbacks(tmp_path, caplog):
    errors = []

    def bad_callback(value):
        raise RuntimeError("callback bug")

    pool = poolparty.Pool(backend="local", work_dir=tmp_path, polling_interval=0.2)
    result = pool.apply_async(abs, (-3,), callback=bad_callback, error_callback=errors.append)
    assert result.get(timeout=60) == 3
    assert errors == []
    assert "callback bug" in caplog.text


def test_terminate_from_inside_a_callback(tmp_path):
    pool = poolparty.Pool(backend="local", work_dir=tmp_path, polling_interval=0.2)
    result = pool.apply_async(abs, (-3,), callback=lambda value: pool.terminate())
    assert result.get(timeout=60) == 3
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(abs, [1])


@pytest.mark.parametrize("call", [
    "pool.apply(square, (4,))",
    "pool.apply_async(square, (4,)).get()",
    "pool.map(apply_twice, [(square, 2)])[0]",
    "pool.starmap(Point, [(4, 16)])[0].y",
])
def test_functions_and_objects_defined_in_the_script_reach_the_jobs(tmp_path, call):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import collections, poolparty

        Point = collections.namedtuple("Point", "x y")

        def square(x):
            return x * x

        def apply_twice(pair):
            function, value = pair
            return function(function(value))

        if __name__ == "__main__":
            pool = poolparty.Pool(backend="local", work_dir={str(tmp_path / 'work')!r})
            print({call})
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "16"
