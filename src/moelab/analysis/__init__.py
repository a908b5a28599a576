"""Analysis: figures, fits and the HTML report."""
