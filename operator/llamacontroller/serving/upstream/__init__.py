"""The client to llama-server: HTTP/1.1 connections, their pools, and one server's API."""
