FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DJANGO_SETTINGS_MODULE=compat_api.settings
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# collectstatic signs nothing; the settings only insist on a key being set (the real one comes at run time).
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v0
EXPOSE 8000
CMD ["sh", "-c", "python manage.py migrate --noinput && if [ -f /app/config/routes.yaml ]; then python manage.py load_routes /app/config/routes.yaml; fi && exec gunicorn compat_api.asgi:application -c gunicorn.conf.py"]
