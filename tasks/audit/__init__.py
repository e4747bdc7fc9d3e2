"""Looking back: lineage, diffs, SQL views, lock history, reports, dashboards and reproduction."""
