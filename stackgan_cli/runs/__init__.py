"""Training runs at a glance: ``stackgan runs`` and the web page's runs view.

records.py  one dict per run directory (settings, progress, last losses, evaluation), torch-free,
            and their JSON list (the table is stackgan_cli.reports.runs_table)
plot.py     the runs' smoothed D and G loss curves in one PNG
"""

from stackgan_cli.runs.records import collect_runs, read_run, runs_json

__all__ = ["collect_runs", "read_run", "runs_json"]
