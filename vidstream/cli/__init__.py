"""The command line: `vidstream ROLE` and `vidstream dev` (`main`), the client commands that
talk to a gateway (`client`: submit, jobs), API keys (`keys`) and job logs (`logs`)."""
