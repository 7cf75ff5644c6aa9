"""The subsidy ledger: money, time, and (as it grows) holds, charges and statements.

`quota` never imports `spawners`: spawners ask it for permission and report usage.
"""
