#!/bin/sh
# Renders /etc/alertmanager/alertmanager.yml with the operator's Discord webhook and SMTP settings
# from the environment (Alertmanager itself does not expand variables) into its writable data
# directory, then starts Alertmanager with that file.
# Unset variables keep the placeholders, so the stack starts without any secret configured.
set -eu

# Escape a value for the replacement side of a sed s||| command.
esc() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }

sed \
  -e "s|https://discord.com/api/webhooks/000000000000000000/CHANGE_ME|$(esc "${DISCORD_WEBHOOK_URL:-https://discord.com/api/webhooks/000000000000000000/CHANGE_ME}")|g" \
  -e "s|smtp_smarthost: smtp.example.org:587|smtp_smarthost: $(esc "${SMTP_SMARTHOST:-smtp.example.org:587}")|" \
  -e "s|smtp_from: tovlog-alerts@example.org|smtp_from: $(esc "${SMTP_FROM:-tovlog-alerts@example.org}")|" \
  -e "s|smtp_auth_username: tovlog-alerts@example.org|smtp_auth_username: $(esc "${SMTP_USERNAME:-tovlog-alerts@example.org}")|" \
  -e "s|to: oncall@example.org|to: $(esc "${ALERT_EMAIL_TO:-oncall@example.org}")|" \
  /etc/alertmanager/alertmanager.yml > /alertmanager/alertmanager.rendered.yml

exec /bin/alertmanager \
  --config.file=/alertmanager/alertmanager.rendered.yml \
  --storage.path=/alertmanager \
  --web.external-url=http://localhost:9093 \
  "$@"
