"""Rescheduling sensor: wait until the SQL aggregates cover the data interval."""
from __future__ import annotations

from airflow.sdk.bases.sensor import BaseSensorOperator


class AggregatesFreshnessSensor(BaseSensorOperator):
    """Succeeds once every target with a deployed model has aggregates reaching the interval's end.

    Each poke is one SQL query; in ``reschedule`` mode the worker slot is freed
    between pokes. On timeout the error names the stale targets, how far
    their data reaches and which of the interval's windows are missing,
    instead of Airflow's generic timeout message.

    :param sql_conn_id: Airflow ``odbc`` connection of the aggregates database.
    :param blob_conn_id: Airflow ``wasb`` connection of the models (and predictions) containers.
    :param models_container: container whose ``<device>/<sensor>/manifest.json`` blobs name the expected targets.
    :raises AirflowSensorTimeout: after ``timeout`` seconds, naming the stale targets.

    The late-data check (``check_late_data``) still reads the deployment's settings when it runs: the
    lookback window, the schedule and the predictions container are the policy of ``batch_scoring.late_data``,
    whose functions take the settings object.
    """

    ui_color = "#e8f4fd"

    def __init__(self, *, sql_conn_id: str, blob_conn_id: str, models_container: str, **kwargs):
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.sql_conn_id = sql_conn_id
        self.blob_conn_id = blob_conn_id
        self.models_container = models_container

    def _stale(self, context) -> tuple[str, dict]:
        from batch_scoring.hooks.blob_storage import BlobStore
        from batch_scoring.hooks.sql import sensor_sql
        from batch_scoring.snapshot import model_targets
        from batch_scoring.context import interval_from_context
        from batch_scoring.sensor_db.reads import missing_windows, stale_targets

        interval = interval_from_context(context)
        expected = model_targets(BlobStore.from_conn_id(self.blob_conn_id), self.models_container)
        with sensor_sql(self.sql_conn_id) as conn:
            stale = stale_targets(conn, interval.start, interval.end, expected)
            missing = missing_windows(conn, interval.start, interval.end, list(stale)) if stale else {}
        return interval.key, {"expected": len(expected), "stale": stale, "missing": missing}

    @staticmethod
    def describe(interval_key: str, found: dict, limit: int = 10) -> str:
        """One line naming up to ``limit`` stale targets of ``found`` (``_stale``'s result), how far their data reaches."""
        stale = found["stale"]
        if not found["expected"]:
            return f"interval {interval_key}: no targets have a deployed model"
        from batch_scoring.sensor_db.checks import describe_missing_windows

        items = list(stale.items()) if isinstance(stale, dict) else [(t, None) for t in stale]
        missing = found.get("missing") or {}

        def one(t, last):
            gaps = f" missing {describe_missing_windows(missing[t])}" if missing.get(t) else ""
            return f"{t} (data until {last or 'never'}){gaps}"

        shown = "; ".join(one(t, last) for t, last in items[:limit])
        more = f" and {len(items) - limit} more" if len(items) > limit else ""
        return f"interval {interval_key}: {len(items)} of {found['expected']} targets stale: {shown}{more}"

    def poke(self, context) -> bool:
        """True once every expected target is fresh (then runs the late-data check); logs the stale ones otherwise."""
        key, found = self._stale(context)
        if found["expected"] and not found["stale"]:
            self.log.info("interval %s: aggregates fresh for all %d targets", key, found["expected"])
            self.check_late_data(context)
            return True
        self.log.info("%s", self.describe(key, found))
        return False

    def check_late_data(self, context) -> list[dict]:
        """Warn about scored intervals whose aggregates changed since (late data), and mark them.

        See ``batch_scoring.late_data``: the warning names each stale interval
        and the one backfill command that rescores them; each gets a
        ``_stale.json`` marker beside its manifest, and the XCom
        ``stale_intervals`` lists their keys. Never fails the run: late data is
        news about *other* intervals.
        """
        from batch_scoring.config import settings
        from batch_scoring.hooks.blob_storage import BlobStore
        from batch_scoring.hooks.sql import sensor_sql
        from batch_scoring.late_data import RevisionsUnavailable, describe, find_stale_intervals, mark_stale
        from batch_scoring.scoring.times import utc_now

        s = settings()  # late-data policy: lookback, schedule, predictions container, the deployment's DAG id
        # outside a DAG run (a task run by hand) the rescoring command names the deployment's DAG, as before
        dag_id = context["dag"].dag_id if context.get("dag") is not None else s.dag_id
        store = BlobStore.from_conn_id(self.blob_conn_id)
        now = utc_now()
        try:
            with sensor_sql(self.sql_conn_id) as conn:
                stale = find_stale_intervals(conn, store, s, dag_id, now)
        except RevisionsUnavailable as exc:
            self.log.warning("late-data check skipped: the table aggregate_revisions cannot be read (%s); create it "
                             "with `python -m batch_scoring.ingest_sim init-db`", exc)
            return []
        if stale:
            mark_stale(store, s, stale)
            self.log.warning("%s", describe(stale, dag_id))
        if context.get("ti") is not None:
            context["ti"].xcom_push(key="stale_intervals", value=[e["interval"] for e in stale])
        return stale

    def execute(self, context):
        """Poke until the interval's aggregates are fresh (see ``poke``); returns what the base sensor returns.

        On success the late-data check has run (XCom ``stale_intervals``). Raises
        ``AirflowSensorTimeout`` after ``timeout`` seconds with a message naming the
        interval, the stale targets, how far their data reaches and the missing
        windows, instead of Airflow's generic message.
        """
        from airflow.sdk.exceptions import AirflowSensorTimeout

        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            key, found = self._stale(context)
            raise AirflowSensorTimeout(f"aggregates not fresh after {self.timeout:.0f}s: {self.describe(key, found)}") from exc
