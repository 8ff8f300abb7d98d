"""Every field type whose SQLite storage differs from what Django's PostgreSQL backend
declares: UUIDField (char(32) / uuid), JSONField (text + CHECK / jsonb),
DurationField (bigint / interval), DateTimeField with USE_TZ (naive UTC text /
timestamptz), DecimalField, TimeField, BinaryField, PositiveIntegerField (a CHECK),
and foreign keys (DEFERRABLE INITIALLY DEFERRED)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Maker(models.Model):
    name = models.CharField(max_length=50, unique=True)


class Product(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    maker = models.ForeignKey(Maker, null=True, on_delete=models.SET_NULL)
    data = models.JSONField(default=dict)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    took = models.DurationField(null=True)
    added = models.DateTimeField(auto_now_add=True)
    opens = models.TimeField(null=True)
    day = models.DateField(null=True)
    active = models.BooleanField(default=True)
    ip = models.GenericIPAddressField(null=True)
    blob = models.BinaryField(null=True)
    stock = models.PositiveIntegerField(default=0)
