"""Running a sweep: prepare its base policies and data, run its trials under Tune, size it to the cluster."""
