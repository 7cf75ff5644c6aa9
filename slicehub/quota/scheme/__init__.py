"""The subsidy scheme's own workflow, inside the quota service: applications, committee review,
decisions that create projects and grants without over-committing the scheme's fund, change
requests, progress reports, and the e-mails each change sends (issue 14; docs/scheme.md).
"""
