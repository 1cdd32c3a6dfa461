import DefaultTheme from "vitepress/theme";
import "./custom.css";
import "./bench.css";
import "./timeline.css";

export default DefaultTheme;
