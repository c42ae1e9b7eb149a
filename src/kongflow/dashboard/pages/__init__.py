"""The dashboard's pages, a module per part: login, the engine's, the jobs service's."""
