// Comparison peer for `ringcast-bench compare`: the push server a Java user would write with
// Netty 4.1 (the distribution's libnetty-java), as Netty's own WebSocket examples do:
// HttpServerCodec + HttpObjectAggregator + WebSocketServerProtocolHandler, one ChannelGroup per
// topic, and a broadcast as ChannelGroup.writeAndFlush of one frame (its buffer is shared, each
// channel gets a retained duplicate). The native epoll transport is used when it loads (Netty's
// advice on Linux); the distribution ships no native library, so it falls back to NIO.
//
// GET /ws?topic=T subscribes at upgrade (like ringcast's raw mode); POST /publish?topic=T on the
// publish port sends the body to every subscriber and answers {"sessions":N}.
//
// Usage: java -cp build:/usr/share/java/netty-all.jar Peer WS_PORT PUBLISH_PORT
import io.netty.bootstrap.ServerBootstrap;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.*;
import io.netty.channel.epoll.Epoll;
import io.netty.channel.epoll.EpollEventLoopGroup;
import io.netty.channel.epoll.EpollServerSocketChannel;
import io.netty.channel.group.ChannelGroup;
import io.netty.channel.group.DefaultChannelGroup;
import io.netty.channel.nio.NioEventLoopGroup;
import io.netty.channel.socket.SocketChannel;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import io.netty.handler.codec.http.*;
import io.netty.handler.codec.http.websocketx.TextWebSocketFrame;
import io.netty.handler.codec.http.websocketx.WebSocketFrame;
import io.netty.handler.codec.http.websocketx.WebSocketServerProtocolHandler;
import io.netty.util.CharsetUtil;
import io.netty.util.concurrent.GlobalEventExecutor;

import java.util.List;
import java.util.concurrent.ConcurrentHashMap;

public final class Peer {
    static final ConcurrentHashMap<String, ChannelGroup> TOPICS = new ConcurrentHashMap<>();

    static String topicOf(String uri) {
        List<String> t = new QueryStringDecoder(uri).parameters().get("topic");
        return t == null || t.isEmpty() ? "" : t.get(0);
    }

    /** Joins the connection's topic once the upgrade is done; ignores what clients send. */
    static final class Subscriber extends SimpleChannelInboundHandler<WebSocketFrame> {
        @Override
        public void userEventTriggered(ChannelHandlerContext ctx, Object evt) throws Exception {
            if (evt instanceof WebSocketServerProtocolHandler.HandshakeComplete) {
                String topic = topicOf(((WebSocketServerProtocolHandler.HandshakeComplete) evt).requestUri());
                TOPICS.computeIfAbsent(topic, t -> new DefaultChannelGroup(GlobalEventExecutor.INSTANCE))
                        .add(ctx.channel());
            } else {
                super.userEventTriggered(ctx, evt);
            }
        }

        @Override
        protected void channelRead0(ChannelHandlerContext ctx, WebSocketFrame frame) {
        }

        @Override
        public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
            ctx.close();
        }
    }

    /** POST /publish?topic=T: the body to every subscriber of T. */
    static final class Publisher extends SimpleChannelInboundHandler<FullHttpRequest> {
        @Override
        protected void channelRead0(ChannelHandlerContext ctx, FullHttpRequest req) {
            ChannelGroup group = TOPICS.get(topicOf(req.uri()));
            int sessions = 0;
            if (group != null) {
                sessions = group.size();
                ByteBuf body = Unpooled.copiedBuffer(req.content());
                group.writeAndFlush(new TextWebSocketFrame(body));
            }
            ByteBuf answer = Unpooled.copiedBuffer("{\"sessions\":" + sessions + "}", CharsetUtil.UTF_8);
            FullHttpResponse resp = new DefaultFullHttpResponse(HttpVersion.HTTP_1_1, HttpResponseStatus.OK, answer);
            resp.headers().set(HttpHeaderNames.CONTENT_TYPE, "application/json");
            resp.headers().set(HttpHeaderNames.CONTENT_LENGTH, answer.readableBytes());
            resp.headers().set(HttpHeaderNames.CONNECTION, HttpHeaderValues.CLOSE);
            ctx.writeAndFlush(resp).addListener(ChannelFutureListener.CLOSE);
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: Peer WS_PORT PUBLISH_PORT");
            System.exit(2);
        }
        boolean epoll = Epoll.isAvailable();
        EventLoopGroup boss = epoll ? new EpollEventLoopGroup(1) : new NioEventLoopGroup(1);
        EventLoopGroup workers = epoll ? new EpollEventLoopGroup() : new NioEventLoopGroup();
        Class<? extends ServerChannel> channel = epoll ? EpollServerSocketChannel.class : NioServerSocketChannel.class;
        ServerBootstrap ws = new ServerBootstrap().group(boss, workers).channel(channel)
                .option(ChannelOption.SO_BACKLOG, 65535)
                .childHandler(new ChannelInitializer<SocketChannel>() {
                    @Override
                    protected void initChannel(SocketChannel ch) {
                        ch.pipeline().addLast(new HttpServerCodec(), new HttpObjectAggregator(65536),
                                new WebSocketServerProtocolHandler("/ws", null, false, 65536, false, true),
                                new Subscriber());
                    }
                });
        ServerBootstrap publish = new ServerBootstrap().group(boss, workers).channel(channel)
                .childHandler(new ChannelInitializer<SocketChannel>() {
                    @Override
                    protected void initChannel(SocketChannel ch) {
                        ch.pipeline().addLast(new HttpServerCodec(), new HttpObjectAggregator(65536), new Publisher());
                    }
                });
        Channel a = ws.bind("127.0.0.1", Integer.parseInt(args[0])).sync().channel();
        publish.bind("127.0.0.1", Integer.parseInt(args[1])).sync();
        System.err.println("peer-netty: ws on " + args[0] + ", publish on " + args[1]
                + (epoll ? " (epoll transport)" : " (NIO transport: no native epoll library)"));
        a.closeFuture().sync();
    }
}
