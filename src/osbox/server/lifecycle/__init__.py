"""The lifecycle API of `osbox serve`: routes, the sandbox manager, records, request validation,
snapshots, the reaper and diagnostics. The server shell (`osbox.server.app`, `runtime`, `proxy`)
composes it with the execd API into the HTTP app."""
