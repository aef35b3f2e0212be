"""Import inference and Windmill's requirement comments, from a table (pure)."""

from __future__ import annotations

import textwrap

import pytest

from deps.inference import Requirements, RequirementsError, inferred, requirements

CASES: list[tuple[str, str, tuple[str, ...], str]] = [
    ("stdlib only", "import os, sys\nfrom json import dumps\nimport collections.abc\n", (), "none"),
    ("plain third party", "import requests\n", ("requests",), "inferred"),
    ("mapped names", "import yaml\nfrom PIL import Image\nimport sklearn.linear_model\n"
     "from bs4 import BeautifulSoup\nimport cv2\n",
     ("beautifulsoup4", "opencv-python", "pillow", "pyyaml", "scikit-learn"), "inferred"),
    ("dotted mapping", "from google.cloud import bigquery\nimport google.protobuf\n",
     ("google-cloud-bigquery", "protobuf"), "inferred"),
    ("our in-job client is provided", "import gristmill\nfrom gristmill import injob\n", (),
     "none"),
    ("relative and __future__ excluded", "from __future__ import annotations\nfrom . import x\n",
     (), "none"),
    ("imports inside functions count", "def main():\n    import httpx\n    return 1\n",
     ("httpx",), "inferred"),
    ("duplicates once", "import numpy\nimport numpy as np\nfrom numpy import array\n",
     ("numpy",), "inferred"),
    ("requirements block replaces", "# requirements:\n# pandas==2.2.3\n# numpy>=2\n"
     "import requests\n", ("numpy>=2", "pandas==2.2.3"), "requirements"),
    ("extra_requirements adds", "# extra_requirements:\n# tqdm\nimport requests\n",
     ("requests", "tqdm"), "inferred"),
    ("extra_requirements pins an inferred one", "#extra_requirements:\n#requests==2.32.3\n"
     "import requests\n", ("requests==2.32.3",), "inferred"),
    ("extra pin matched by normalized name", "# extra_requirements:\n# PyYAML==6.0.2\n"
     "import yaml\n", ("PyYAML==6.0.2",), "inferred"),
    ("block ends at a blank comment", "# requirements:\n# a\n#\n# b\n", ("a",), "requirements"),
    ("block ends at code", "# requirements:\n# a\nx = 1\n# b\n", ("a",), "requirements"),
    ("empty requirements block means none", "# requirements:\n\nimport requests\n", (),
     "none"),
    ("syntax error infers nothing", "import requests\ndef main(:\n", (), "none"),
    ("markers and extras kept", "# requirements:\n# httpx[http2]>=0.27; python_version>='3.8'\n",
     ('httpx[http2]>=0.27; python_version >= "3.8"',), "requirements"),
]


@pytest.mark.parametrize(("code", "lines", "source"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_requirements_table(code: str, lines: tuple[str, ...], source: str) -> None:
    """Each row: the code, what it requires, and where that came from."""
    assert requirements(code) == Requirements(lines, source)


@pytest.mark.parametrize("line", ["-r /etc/passwd", "--index-url http://evil", "-e .",
                                  "not a requirement!"])
def test_options_are_refused_with_the_line(line: str) -> None:
    """A comment line that is not a PEP 508 requirement is an error naming its line."""
    code = textwrap.dedent(f"""\
        import os
        # extra_requirements:
        # {line}
        """)
    with pytest.raises(RequirementsError, match="line 3"):
        requirements(code)


def test_requirements_text_is_one_per_line() -> None:
    """The resolver's input: one requirement a line, sorted."""
    assert requirements("import yaml\nimport requests\n").text() == "pyyaml\nrequests\n"


def test_inferred_sorted_by_normalized_name() -> None:
    """Inference sorts case-insensitively."""
    assert inferred("import Zeta\nimport alpha\n") == ["alpha", "Zeta"]
