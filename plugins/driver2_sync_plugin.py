"""The project's Airflow plugin: the api-server refuses a custom import triggered with a param
the form does not have (see driver2_sync.trigger_guard)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from driver2_sync.trigger_guard import UnknownParamGuard


class Driver2SyncPlugin(AirflowPlugin):
    name = "driver2_sync"
    fastapi_root_middlewares = [
        {"name": "driver2_unknown_param_guard", "middleware": UnknownParamGuard},
    ]
