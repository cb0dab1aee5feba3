import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("orders", "0009_group_failure_records")]

    operations = [
        migrations.AlterField(
            model_name="failurerecord",
            name="group",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="records",
                to="orders.failuregroup",
            ),
        ),
    ]
