"""The subsidy ledger and the quota service that runs it.

The ledger, split by job: `ledger` (the `Ledger` facade callers use), `errors`, `admin` (audited
staff changes), `hold` (the pure hold and extend rules), `metering` (charges, release), `reader`
(read-only views), `states` and `store` (the database); `pricing` is the arithmetic, `models` and
`migrations` the schema. Around it: `service` (the hub-managed service: `api`, `pages`,
`hold_queue`, `meter_loop`, `metrics`), `cli` (`slicehub admin`, statements and reports),
`statement` and `statement_render`, `roster`.

`quota` never imports `spawners` or the notebook side: spawners ask it for permission and report
usage through its REST API (`slicehub.common.quota_client`).
"""
