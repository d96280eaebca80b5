"""The controller: inventory, plans, executions and records in the database; planning,
dispatch, results, schedules and the web console."""
