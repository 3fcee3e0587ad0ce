"""The static leaderboard site (`languini site`): HTML, CSS, a little plain JavaScript and
inline SVG, built from submission bundles and runs, that opens from disk or any static host.

    collect   what to show, from leaderboard.check/board, scaling.fit and mix compare's tables
    svg       a small SVG plotter;  figures  the fit, loss-curve and mix-bar figures
    html      layout and tables;    pages    the index and comparison pages;  entry  an entry's page
    build     render every file and write the folder atomically, with site.json
"""

from languini.site.build import build

__all__ = ["build"]
