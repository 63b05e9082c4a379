# Models the gunicorn config file that vuhieu2402/BE_restaurantV2's
# supervisor/gunicorn.conf passes with --config: the bind is here.
# Written for appvisor's corpus with its own names and values.
bind = "127.0.0.1:8001"
workers = 2
timeout = 60
