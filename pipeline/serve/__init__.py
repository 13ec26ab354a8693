"""`pipe serve`: an HTTP scoring service and a web page on trained runs (FastAPI + uvicorn).

engine.py loads a run once and scores requests through `pipe score`'s own functions;
batching.py merges concurrent requests into one forward pass; parse.py reads requests;
uploads.py keeps uploaded images under the cache root; app.py is the API and page;
server.py binds and runs it.
"""
