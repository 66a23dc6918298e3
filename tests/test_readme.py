"""The README's Python examples run as written and do what the text says."""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), namespace)
    checked = False
    if "traj" in namespace:  # the library quickstart: √NGD learns the task
        loss = np.asarray(namespace["traj"].loss)
        assert loss[-1] < 1e-3 * loss[0]
        checked = True
    if "opt" in namespace and "step" in namespace:  # the optax loop: the loss falls
        model, x, y = namespace["model"], namespace["x"], namespace["y"]
        assert float(model.loss(namespace["params"], x, y)) < 0.05 * float(np.mean(np.sum(np.asarray(y) ** 2, 1)) / 2)
        checked = True
    if "table" in namespace and "fig" in namespace:  # the sweep: sqrt-NGD reaches 1 % faster at every scale
        table = namespace["table"]
        assert len(table) == 18 and set(table["status"]) == {"completed"}
        median = table.groupby(["rule", "init_scale"], observed=True)["time_to_fraction"].median().unstack()
        assert (median.loc["sqrt-ngd"] < 0.2 * median.loc["sgd"]).all()
        assert namespace["fig"].axes[0].get_xlabel() == "init_scale"
        checked = True
    assert checked, "a README example without a check of what it claims: add one here"
