FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DJANGO_SETTINGS_MODULE=compat_api.settings
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN python manage.py collectstatic --noinput -v0
EXPOSE 8000
CMD ["sh", "-c", "python manage.py migrate --noinput && if [ -f /app/config/routes.yaml ]; then python manage.py load_routes /app/config/routes.yaml; fi && exec gunicorn compat_api.asgi:application -c gunicorn.conf.py"]
