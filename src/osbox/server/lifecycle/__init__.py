"""The lifecycle side of `osbox serve`: sandbox records and states, snapshots, diagnostics,
endpoints and the server proxy. `osbox.server.app` composes these into the HTTP app."""
