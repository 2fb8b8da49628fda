"""Reports people read: offline comparisons of files or frames, rendered as JSON or HTML.

`compare` judges current data against reference data with the service's own profiles,
binning and statistics; `render_html` turns any drift report (the service's live one
included) into one self-contained HTML page.
"""

from driftline.reporting.comparison import Comparison, compare
from driftline.reporting.html import render_html
from driftline.reporting.tables import InputError

__all__ = ["Comparison", "InputError", "compare", "render_html"]
