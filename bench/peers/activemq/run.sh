#!/usr/bin/env bash
# ActiveMQ for one bench run, in the foreground: `run.sh DIR STOMP_PORT`. Installs the
# distribution's activemq if missing, writes its configuration and state under DIR, serves STOMP
# on 127.0.0.1:STOMP_PORT (NIO transport); on TERM it stops the broker and removes DIR.
# Debian's activemq has no `ws://` transport connector (activemq-http is not packaged), so the
# sessions speak STOMP over TCP, as Spring's broker relay itself does. Settings: bench/README.md.
set -euo pipefail
dir=$1 stomp_port=$2
if [ ! -f /usr/share/activemq/bin/activemq.jar ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq activemq </dev/null >/dev/null
fi
mkdir -p "$dir/conf" "$dir/data" "$dir/tmp"
cat > "$dir/conf/activemq.xml" <<CONF
<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="bench" useJmx="false"
          persistent="false" advisorySupport="false" schedulerSupport="false"
          dataDirectory="$dir/data">
    <systemUsage><systemUsage><memoryUsage><memoryUsage percentOfJvmHeap="70"/></memoryUsage></systemUsage></systemUsage>
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp+nio://127.0.0.1:$stomp_port?transport.backlog=4096"/>
    </transportConnectors>
  </broker>
</beans>
CONF
ulimit -n "$(ulimit -Hn)"
java -Xms4g -Xmx4g -XX:+UseG1GC \
  -Dactivemq.home=/usr/share/activemq -Dactivemq.base="$dir" -Dactivemq.conf="$dir/conf" \
  -Dactivemq.data="$dir/data" -Djava.io.tmpdir="$dir/tmp" \
  --add-opens java.base/java.lang=ALL-UNNAMED \
  -jar /usr/share/activemq/bin/activemq.jar start "xbean:file:$dir/conf/activemq.xml" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"; exit 0' TERM INT
wait "$pid"
