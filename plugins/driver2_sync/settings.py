"""Names that the outside world configures: connection ids, Variables, defaults."""

DRIVER2_CONN_ID = "driver2_api"
PLANMANAGER_CONN_ID = "planmanager_db"
REPORTS_STORAGE_CONN_ID = "reports_storage"
REPORTS_URL_VARIABLE = "driver2_reports_url"
STAGING_URL_VARIABLE = "driver2_staging_url"

SYNC_DAG_ID = "driver2_invoice_sync"
CUSTOM_IMPORT_DAG_ID = "driver2_custom_import"

# Invoices handled together: one Driver2 page, one staging file, one PlanManager transaction.
BATCH_SIZE = 500
